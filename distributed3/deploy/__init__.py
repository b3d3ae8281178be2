"""Starting clusters: the executables, a local cluster, clusters over SSH and batch
schedulers, processes.

::

    cli.py         dcenter (and the workers it forks for Pool()); main of both executables
    worker_cli.py  dworker: a worker under its nanny, or --nprocs of them
    serving.py     what both share: common options, secret, TLS, logging, serving until a signal
    nanny.py       Nanny: restarts a worker process that dies, reports why to the center
    local.py       LocalCluster: the center and workers Pool() starts on loopback
    cluster.py     Cluster: what deployed clusters share (scale, adapt, close, logs)
    adaptive.py    Adaptive: a cluster sized to the work its pools have not finished
    jobqueue.py    SLURMCluster, PBSCluster, SGECluster, LSFCluster: workers as jobs
    jobscripts.py  the job scripts those submit
    ssh.py         SSHCluster and dssh: the center and workers started over ssh
    procs.py       spawning, forking, reaping and stopping processes; resources, GPUs
"""
