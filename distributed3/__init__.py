"""distributed3: distributed computing with data locality, on tornado.

>>> from distributed3 import Pool
>>> with Pool(n_workers=2) as pool:
...     A = pool.map(lambda x: x ** 2, range(10))
...     pool.apply(sum, [A]).get()
285
"""
from .center import Center
from .client import RemoteData
from .core import ConnectionPool, Server, __version__, rpc
from .exceptions import (
    AuthenticationError,
    CommClosedError,
    ConnectionBrokenError,
    DistributedError,
    ProtocolError,
    RemoteTraceback,
    SerializationError,
    TaskError,
    WorkerLostError,
)
from .futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait
from .local import LocalCluster
from .pool import Pool
from .security import TLS
from .stateful import StatefulPool, WorkerInterface
from .worker import Worker

__all__ = [
    "Pool", "RemoteData", "TLS", "WorkerInterface", "StatefulPool", "as_completed", "wait", "ALL_COMPLETED", "FIRST_COMPLETED",
    "FIRST_EXCEPTION", "Center", "Worker", "LocalCluster", "Server", "rpc",
    "ConnectionPool", "AuthenticationError", "CommClosedError", "ConnectionBrokenError",
    "DistributedError", "ProtocolError", "RemoteTraceback", "SerializationError",
    "TaskError", "WorkerLostError", "__version__",
]  # fmt: skip
