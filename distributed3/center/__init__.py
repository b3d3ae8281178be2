"""The center: which worker holds which key, and which workers are alive.

:mod:`.center` holds the :class:`Center` server (membership, key locations);
:mod:`.ownership` the part that tracks which client owns which key and lets keys go.
"""
from .center import Center

__all__ = ["Center"]
