"""The handshake that opens every connection: both sides prove the cluster's secret.

Raw bytes, nothing unpickled: the hellos and the HMACs of the wire format that
:mod:`distributed3.core.comm` describes, used by its ``connect`` and ``accept``.  A client also names what a peer that is not a distributed3 server said instead (an SSH
banner, nothing at all from an HTTP server), rather than waiting for its timeout.

>>> silence(b""), silence(b"SSH-2")
('; it sent nothing (a process stopped or too busy to answer, or a server that waits for its client to speak first, as HTTP does?)', "; it sent only b'SSH-2'")
"""
import hashlib
import hmac
import os
import struct

from ..exceptions import AuthenticationError, ProtocolError
from ..utils import format_address

VERSION = 1
MAGIC = b"D3"
NONCE = 32
_SERVER_HELLO = struct.Struct("<2sBB32s")
_CLIENT_HELLO = struct.Struct("<2sBB32s32s")
_SERVER_REPLY = struct.Struct("<B32s")


def _mac(secret, role, a, b):
    return hmac.new(secret, b"distributed3 " + role + a + b, hashlib.sha256).digest()


async def server_handshake(stream, peer, secret, nonce_s, mode):
    """The server's side, on a freshly accepted ``stream`` from ``peer``."""
    await stream.write(_SERVER_HELLO.pack(MAGIC, VERSION, mode, nonce_s))
    data = await stream.read_bytes(_CLIENT_HELLO.size)
    magic, version, cmode, nonce_c, mac_c = _CLIENT_HELLO.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"{format_address(peer)} does not speak distributed3")
    if version != VERSION:
        raise ProtocolError(
            f"{format_address(peer)} speaks protocol version {version}, we speak {VERSION}"
        )
    if secret:
        if cmode != 1:
            await stream.write(_SERVER_REPLY.pack(2, bytes(32)))
            raise AuthenticationError(
                f"{format_address(peer)} connected without a secret; this server requires one"
            )
        if not hmac.compare_digest(mac_c, _mac(secret, b"client", nonce_s, nonce_c)):
            await stream.write(_SERVER_REPLY.pack(1, bytes(32)))
            raise AuthenticationError(f"{format_address(peer)} presented a wrong secret")
        await stream.write(_SERVER_REPLY.pack(0, _mac(secret, b"server", nonce_c, nonce_s)))
    else:
        await stream.write(_SERVER_REPLY.pack(0, bytes(32)))


async def read_hello(stream, name, received):
    """The server's hello, read as it comes, into ``received`` (for the error should it
    never be whole): a peer whose first bytes are not ours is refused at once."""
    while len(received) < _SERVER_HELLO.size:
        received += await stream.read_bytes(_SERVER_HELLO.size - len(received), partial=True)
        if not received.startswith(MAGIC[:len(received)]):
            raise ProtocolError(f"{name} is not a distributed3 server: it said "
                                f"{bytes(received)!r}")  # fmt: skip
    return bytes(received)


def silence(received):
    """What a handshake that timed out got from the server, in words."""
    if not received:
        return ("; it sent nothing (a process stopped or too busy to answer, or a server "
                "that waits for its client to speak first, as HTTP does?)")  # fmt: skip
    return f"; it sent only {bytes(received)!r}"


async def client_handshake(stream, name, secret, received=None):
    """Our side of the mutual HMAC challenge-response with server ``name``."""
    received = bytearray() if received is None else received
    magic, version, mode, nonce_s = _SERVER_HELLO.unpack(
        await read_hello(stream, name, received)
    )
    if magic != MAGIC:
        raise ProtocolError(f"{name} is not a distributed3 server")
    if version != VERSION:
        raise ProtocolError(f"{name} speaks protocol version {version}, we speak {VERSION}")
    if mode == 1 and not secret:
        raise AuthenticationError(f"{name} requires a secret and we have none")
    if mode == 0 and secret:
        raise AuthenticationError(
            f"{name} does not know the cluster's secret; refusing to trust it"
        )
    nonce_c = os.urandom(NONCE)
    mac_c = _mac(secret, b"client", nonce_s, nonce_c) if secret else bytes(32)
    await stream.write(_CLIENT_HELLO.pack(MAGIC, VERSION, mode, nonce_c, mac_c))
    status, mac_s = _SERVER_REPLY.unpack(await stream.read_bytes(_SERVER_REPLY.size))
    if status == 1:
        raise AuthenticationError(f"{name} rejected our secret")
    if status != 0:
        raise AuthenticationError(f"{name} rejected the connection (status {status})")
    if secret and not hmac.compare_digest(mac_s, _mac(secret, b"server", nonce_c, nonce_s)):
        raise AuthenticationError(f"{name} failed to prove it holds the secret")
