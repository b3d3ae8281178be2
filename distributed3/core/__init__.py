"""The substrate every role is built on: serialization, framing, handshake, servers, rpc.

::

    protocol   dumps(obj) -> [frames], loads(frames); functions by cloudpickle
    comm       frames on a socket, the HMAC handshake, connect / read / write
    server     Server ({op: handler}), rpc(addr).op(**kw), ConnectionPool, request(comm, msg)
    security   secrets and TLS

It imports nothing from the roles (center, worker) nor from the client.  The names a
program built on it needs are here::

    from distributed3.core import Server, rpc, ConnectionPool
"""
from .comm import Comm, Limits, connect, read, write
from .server import (
    REPLIED,
    ConnectionPool,
    Server,
    __version__,
    error_message,
    ok_message,
    raise_remote,
    request,
    result_of,
    rpc,
)

__all__ = [
    "Server", "rpc", "ConnectionPool", "connect", "read", "write", "Comm", "Limits",
    "error_message", "ok_message", "raise_remote", "REPLIED", "request", "result_of",
    "__version__",
]  # fmt: skip
