"""distributed3: distributed computing with data locality, on tornado.

>>> from distributed3 import Pool
>>> with Pool(n_workers=2) as pool:
...     A = pool.map(lambda x: x ** 2, range(10))
...     pool.apply(sum, [A]).get()
285
"""
import importlib
from typing import TYPE_CHECKING, Any

from .core.server import __version__

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and IDEs
    from .center import Center
    from .client.executor import Executor
    from .client.futures import (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION,
                                 as_completed, wait)
    from .client.handles import RemoteData
    from .client.pool import Pool
    from .client.results import RemoteList
    from .client.stateful import StatefulPool, WorkerInterface
    from .core.security import TLS
    from .core.server import ConnectionPool, Server, rpc
    from .deploy.jobqueue import LSFCluster, PBSCluster, SGECluster, SLURMCluster
    from .deploy.local import LocalCluster
    from .deploy.ssh import SSHCluster
    from .exceptions import (AuthenticationError, CommClosedError, ConnectionBrokenError,
                             DataLostError, DistributedError, MissingDataError, ProtocolError,
                             RemoteTraceback, SerializationError, StateMissingError, TaskError,
                             VersionMismatchError, WorkerLostError, WorkerPausedError,
                             WorkerRetiringError)
    from .worker.worker import Worker

# Names load on first use (PEP 562), so a worker process does not import the pool's
# modules nor a client the worker's: each starts faster.
_WHERE = {
    "Pool": "client.pool", "Executor": "client.executor", "RemoteData": "client.handles", "RemoteList": "client.results",
    "WorkerInterface": "client.stateful", "StatefulPool": "client.stateful",
    "as_completed": "client.futures", "wait": "client.futures",
    "ALL_COMPLETED": "client.futures", "FIRST_COMPLETED": "client.futures",
    "FIRST_EXCEPTION": "client.futures", "Center": "center", "Worker": "worker.worker",
    "LocalCluster": "deploy.local", "SSHCluster": "deploy.ssh",
    "SLURMCluster": "deploy.jobqueue", "PBSCluster": "deploy.jobqueue",
    "SGECluster": "deploy.jobqueue", "LSFCluster": "deploy.jobqueue", "Server": "core.server", "rpc": "core.server",
    "ConnectionPool": "core.server", "TLS": "core.security",
    "AuthenticationError": "exceptions", "CommClosedError": "exceptions",
    "ConnectionBrokenError": "exceptions", "DistributedError": "exceptions",
    "ProtocolError": "exceptions", "RemoteTraceback": "exceptions",
    "SerializationError": "exceptions", "TaskError": "exceptions",
    "WorkerLostError": "exceptions", "MissingDataError": "exceptions",
    "DataLostError": "exceptions",
    "WorkerRetiringError": "exceptions", "StateMissingError": "exceptions",
    "WorkerPausedError": "exceptions",
    "VersionMismatchError": "exceptions",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'distributed3' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "Pool", "Executor", "RemoteData", "RemoteList", "TLS", "WorkerInterface", "StatefulPool",
    "as_completed", "wait", "ALL_COMPLETED", "FIRST_COMPLETED",
    "FIRST_EXCEPTION", "Center", "Worker", "LocalCluster", "SSHCluster", "SLURMCluster",
    "PBSCluster", "SGECluster", "LSFCluster", "Server", "rpc",
    "ConnectionPool", "AuthenticationError", "CommClosedError", "ConnectionBrokenError",
    "DistributedError", "ProtocolError", "RemoteTraceback", "SerializationError",
    "TaskError", "WorkerLostError", "MissingDataError", "DataLostError", "WorkerRetiringError",
    "StateMissingError", "VersionMismatchError", "WorkerPausedError", "__version__",
]  # fmt: skip
