"""The worker role: holds data, runs tasks on it, serves it to peers.

::

    worker.py        the Worker server: its ops, its data dict, fetching inputs
    runner.py        its task threads: a queue they drain, results handed to the loop
    relay.py         in a process of its own: the thread that reads a lone task runs it
    execute.py       running a task or a chunk of them in a task thread, and the reply
    center_link.py   registering with the center, key reports, heartbeats
    leaving.py       retiring (when its time is up, or asked), handing keys to peers
    store.py         SpillStore: results past a memory target go to files; memory limits
    monitor.py       MemoryMonitor: by process memory, spill more, pause, resume
"""
from .worker import Worker

__all__ = ["Worker"]
