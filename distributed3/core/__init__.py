"""The substrate every role is built on: serialization, framing, handshake, servers, rpc.

::

    protocol   dumps(obj) -> [frames], loads(frames); functions by cloudpickle
    framing    the wire format read: bytes in, whole messages out, sizes checked first
    sockets    SocketStream: a plain TCP connection read and written on the loop
    comm       messages on a connection, the HMAC handshake, connect / read / write
    messages   requests and replies: request(comm, msg), ok_message, error_message
    server     Server ({op: handler}), rpc(addr).op(**kw), ConnectionPool
    channel    Channel: many requests on one connection, sent and answered together
    security   secrets and TLS

It imports nothing from the roles (center, worker) nor from the client.  The names a
program built on it needs are here::

    from distributed3.core import Server, rpc, ConnectionPool
"""
from .channel import Channel, Channels
from .comm import Comm, Limits, connect, read, write
from .messages import REPLIED, error_message, ok_message, raise_remote, request, result_of
from .server import ConnectionPool, Server, __version__, rpc

__all__ = [
    "Server", "rpc", "ConnectionPool", "Channel", "Channels", "connect", "read", "write",
    "Comm", "Limits",
    "error_message", "ok_message", "raise_remote", "REPLIED", "request", "result_of",
    "__version__",
]  # fmt: skip
