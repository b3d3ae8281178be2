"""How tasks run: one typed record, passed whole wherever tasks are made.

A call (``map``, ``apply``, ``submit``, ``imap``, a stateful pool's ``map``) builds one
:class:`Options`; the tasks it makes keep it in their recipes, so recomputing a lost
result later runs under the same ``timeout``, ``retries``, ``seed`` and ``resources``.
Each option has its one default here, and the ``Pool`` methods take theirs from
:data:`DEFAULTS`.

>>> DEFAULTS.retries, DEFAULTS.timeout
(3, None)
>>> Options(timeout=5, seed=1).replace(chunksize=10)
Options(timeout=5, retries=3, chunksize=10, seed=1, progress=False, resources=None)
"""
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """How to run the tasks of one call; see :meth:`distributed3.Pool.map`.

    * ``timeout``: seconds a task may run before the call raises ``TimeoutError``;
    * ``retries``: how many worker deaths a task may be running through;
    * ``chunksize``: tasks per message; ``None``: sized by the call (see
      :func:`distributed3.scheduling.adaptive_chunksize`);
    * ``seed``: seeds ``random`` and ``numpy.random`` per task from ``(seed, index)``;
    * ``progress``: show a progress bar;
    * ``resources``: what each task needs free on its worker, ``{"GPU": 1}``;
    * ``stateful``: ``{"name", "version"}`` of a stateful pool's instances, and
      ``prepare``, a coroutine function awaited with a worker before its first task
      (both set by :class:`~distributed3.client.stateful.StatefulPool`);
    * ``values_only``: the call wants the tasks' values, never their handles (a
      stream, see :mod:`~distributed3.client.streams`): results small enough to come
      with the reply are not kept on the workers.
    """

    timeout: float | None = None
    retries: int = 3
    chunksize: int | None = None
    seed: int | None = None
    progress: bool = False
    resources: dict[str, float] | None = None
    stateful: dict | None = dataclasses.field(default=None, repr=False)
    prepare: Callable[..., Awaitable[Any]] | None = dataclasses.field(default=None, repr=False,
                                                                       compare=False)  # fmt: skip
    values_only: bool = dataclasses.field(default=False, repr=False)

    def replace(self, **changes: Any) -> "Options":
        """A copy with ``changes``.

        >>> Options(retries=0).replace(seed=3).seed
        3
        """
        return dataclasses.replace(self, **changes)


DEFAULTS = Options()
