"""The worker role: holds data, runs tasks on it, serves it to peers.

::

    worker.py        the Worker server: its ops, its data dict, fetching inputs
    execute.py       running a task or a chunk of them in a task thread, and the reply
    center_link.py   registering with the center, key reports, heartbeats
"""
from .worker import Worker

__all__ = ["Worker"]
