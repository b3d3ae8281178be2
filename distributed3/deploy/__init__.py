"""Starting clusters: the executables, a local cluster, processes.

::

    cli.py         dcenter (and the workers it forks for Pool()); main of both executables
    worker_cli.py  dworker: a worker under its nanny, or --nprocs of them
    serving.py     what both share: common options, secret, TLS, logging, serving until a signal
    health.py      /health and /ready over HTTP, for probes (--http-port)
    nanny.py       Nanny: restarts a worker process that dies, reports why to the center
    local.py       LocalCluster: the center and workers Pool() starts on loopback
    procs.py       spawning, forking, reaping and stopping processes; resources, GPUs
"""
