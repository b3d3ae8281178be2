"""The few exception types distributed3 raises; each message names the peer.

Two families are kept apart, as trio does: ``CommClosedError`` means *we* closed
the connection (or were asked to), ``ConnectionBrokenError`` means the *other
side* broke it.  ``RemoteTraceback`` carries a remote traceback as the
``__cause__`` of a re-raised remote exception.

>>> try:
...     raise AuthenticationError("127.0.0.1:8787 rejected our secret")
... except DistributedError as e:
...     print(e)
127.0.0.1:8787 rejected our secret
"""


class DistributedError(Exception):
    """Base class of every error distributed3 raises on its own account."""


class CommClosedError(DistributedError):
    """The connection was closed by us, or is being used after close."""


class ConnectionBrokenError(DistributedError, ConnectionError):
    """The peer closed the connection, or it broke, or sent something unreadable."""


class ProtocolError(ConnectionBrokenError):
    """The peer sent bytes that are not a valid message (bad lengths, bad header)."""


class SerializationError(DistributedError, TypeError):
    """A value could not be pickled for sending, or unpickled on arrival."""


class AuthenticationError(DistributedError):
    """The peer did not prove it holds the cluster's secret, or rejected ours."""


class WorkerLostError(DistributedError):
    """A worker holding the data or running the task went away."""


class DataLostError(DistributedError, KeyError):
    """The data behind a key is gone: deleted, or every copy died and it cannot be made
    again.  A ``KeyError``, as a missing key of a dict is; ``gather``, ``get`` and a
    task whose input it was all raise this family.

    >>> str(DataLostError("RemoteData<key=x> was deleted"))
    'RemoteData<key=x> was deleted'
    """

    def __str__(self):
        return self.args[0] if self.args else ""


class MissingDataError(DataLostError, WorkerLostError):
    """A key is held by no reachable worker (a task's input, or a key asked of a worker),
    and what held it is gone.

    >>> str(MissingDataError("worker 127.0.0.1:9000 does not hold key 'x'"))
    "worker 127.0.0.1:9000 does not hold key 'x'"
    >>> issubclass(MissingDataError, KeyError), issubclass(MissingDataError, WorkerLostError)
    (True, True)
    """


class StateMissingError(DistributedError):
    """A stateful task reached a worker whose instance is missing or behind."""


class WorkerRetiringError(DistributedError):
    """The worker is leaving and takes no new tasks; the pool sends them elsewhere."""


class TaskGivenBackError(DistributedError):
    """The worker gave a queued task back unrun, as its pool asked when the tasks turned
    out long: the pool sends it to the first free core rather than leave it queued."""


class WorkerPausedError(DistributedError):
    """The worker is paused near its memory limit and turned the task away unrun; the
    pool sends it to another worker, or to this one again once it has rested."""


class VersionMismatchError(DistributedError):
    """A peer runs a Python that cannot run this client's code (see distributed3.versions)."""


class TaskError(DistributedError):
    """A task failed and its exception could not travel back as itself."""


class RemoteTraceback(Exception):
    """The text of a traceback from another process, attached as ``__cause__``.

    >>> print(RemoteTraceback("Traceback ...", "127.0.0.1:9000"))
    <BLANKLINE>
    Remote traceback from 127.0.0.1:9000:
    Traceback ...
    """

    def __init__(self, text, peer=None):
        super().__init__(text, peer)
        self.text = text
        self.peer = peer

    def __str__(self):
        where = f" from {self.peer}" if self.peer else ""
        return f"\nRemote traceback{where}:\n{self.text}"
