"""Starting clusters: the executables, a local cluster, processes.

::

    cli.py     dcenter and dworker: parse arguments, set up logging and signals, run
    local.py   LocalCluster: the center and workers Pool() starts on loopback
    procs.py   spawning, forking, reaping and stopping processes; resources, GPUs
"""
