"""The request/reply conventions every role speaks.

A request is ``{"op": name, **kwargs}``; its reply is ``{"status": "OK", "result":
...}`` or ``{"status": "error", "exception": e, "traceback": text}``.  :func:`request`
sends one and returns the result, or re-raises the remote error with its traceback.
"""
import asyncio
import traceback

from ..exceptions import ProtocolError, RemoteTraceback, TaskError
from ..utils import format_address

class _Replied:
    """What a handler returns when it has sent its reply itself (:func:`ok_message`,
    ``Comm.encode``, ``Comm.send_from_thread``): the server sends none."""

    def __repr__(self):
        return "REPLIED"


REPLIED = _Replied()


def ok_message(result):
    """The reply for a handler that returned ``result``.

    >>> ok_message(3)
    {'status': 'OK', 'result': 3}
    """
    return {"status": "OK", "result": result}


def error_message(exc, tb=None):
    """The structured reply for an exception raised while handling a message.

    >>> try:
    ...     1 / 0
    ... except ZeroDivisionError as e:
    ...     msg = error_message(e)
    >>> msg["status"], type(msg["exception"]).__name__, "1 / 0" in msg["traceback"]
    ('error', 'ZeroDivisionError', True)
    """
    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"status": "error", "exception": exc, "traceback": tb}


def raise_remote(exception, tb_text, peer):
    """Re-raise an exception from ``peer`` with its remote traceback as ``__cause__``.

    >>> try:
    ...     raise_remote(ValueError("bad"), "Traceback ...", ("127.0.0.1", 9000))
    ... except ValueError as e:
    ...     print(e, "|", e.__cause__.peer)
    bad | 127.0.0.1:9000
    """
    if not isinstance(exception, BaseException):
        exception = TaskError(f"{peer}: {exception!r}")
    if isinstance(peer, tuple):
        peer = format_address(peer)
    exception.__cause__ = RemoteTraceback(tb_text, peer)
    try:
        raise exception
    finally:  # this frame, in the exception's traceback, must not hold it: a cycle
        exception = None  # would keep every frame's locals (a batch's tasks, their
        # handles) until the cyclic collector ran, and their keys unreleased meanwhile


def result_of(response, peer):
    """The ``result`` of a structured reply from ``peer``, or its error re-raised (see
    :func:`raise_remote`); anything else is a :class:`ProtocolError` naming the peer.

    >>> result_of({"status": "OK", "result": 3}, ("127.0.0.1", 9000))
    3
    >>> result_of({"oops": 1}, ("127.0.0.1", 9000))
    Traceback (most recent call last):
    ...
    distributed3.exceptions.ProtocolError: 127.0.0.1:9000 sent a reply without a status: {'oops': 1}
    """
    status = response.get("status") if isinstance(response, dict) else None
    if status == "OK":
        return response.get("result")
    if status == "error":  # taken out: the reply, held by the frames the exception's
        # traceback holds (the caller's), must not hold it in turn (see raise_remote)
        raise_remote(response.pop("exception", None), response.get("traceback", ""), peer)
    if isinstance(peer, tuple):
        peer = format_address(peer)
    raise ProtocolError(f"{peer} sent a reply without a status: {response!r:.200}")


async def request(comm, msg, timeout=None):
    """Send ``msg`` on ``comm`` and return the ``result`` of the reply, or re-raise the
    remote error with its traceback; ``timeout`` bounds the wait for the reply.

    The one request/reply helper: :meth:`ConnectionPool.call`, a worker's link to the
    center and a pool's subscription all use it.

    >>> from distributed3.core import Server, connect
    >>> async def demo():
    ...     server = await Server({"add": lambda comm, x, y: x + y}).start(port=0)
    ...     comm = await connect(server.address)
    ...     total = await request(comm, {"op": "add", "x": 1, "y": 2})
    ...     try:
    ...         await request(comm, {"op": "add", "x": 1, "y": "two"})
    ...     except TypeError as e:
    ...         error = type(e).__name__
    ...     comm.close(); await server.close()
    ...     return total, error
    >>> asyncio.run(demo())
    (3, 'TypeError')
    """
    return result_of(await exchange(comm, msg, timeout), comm.peer)


async def exchange(comm, msg, timeout=None):
    """Send ``msg`` on ``comm`` and return the reply as it came (see :func:`request`)."""
    await comm.write(msg)
    if timeout is None:
        return await comm.read()
    async with asyncio.timeout(timeout):  # loses no cancellation (see comm)
        return await comm.read()


def unpicklable_error(response):
    """An error reply that can be sent in place of ``response``, whose exception could
    not be serialized: its type and text as a ``TaskError``.

    >>> unpicklable_error({"exception": ValueError("x")})["exception"]
    TaskError('ValueError: x')
    """
    exc = response.get("exception")
    return {
        "status": "error",
        "exception": TaskError(f"{type(exc).__name__}: {exc}"),
        "traceback": response.get("traceback", ""),
    }
