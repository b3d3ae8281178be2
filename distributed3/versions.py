"""The versions a process runs, and which differences between two processes matter.

Workers announce theirs when they register, the center passes them to the clients, and
a client checks each peer against its own (:meth:`distributed3.Pool.get_versions`):

* a different Python (major.minor) is refused: functions defined in a script or a
  notebook travel as bytecode, which one Python cannot run from another (3.13 code on
  3.11 fails with ``SystemError: no locals found when setting up annotations``);
* a different distributed3, cloudpickle or numpy is warned about: most things work, and
  what breaks is then easy to place.

>>> mine = versions()
>>> sorted(mine)
['cloudpickle', 'distributed3', 'numpy', 'python']
>>> compare(mine, dict(mine, python="2.7.18"), "worker 10.0.0.7:4000")[0]  # doctest: +ELLIPSIS
['this client runs Python 3.1... but worker 10.0.0.7:4000 runs Python 2.7.18: ...']
"""
import platform
import sys

__all__ = ["versions", "compare"]

PACKAGES = ("distributed3", "cloudpickle", "numpy")


def versions():
    """``{"python": "3.11.7", "distributed3": ..., "cloudpickle": ..., "numpy": ...}`` of
    this process (``None`` for a package it does not have)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                out[name] = None
                continue
        out[name] = getattr(module, "__version__", None)
    return out


def _minor(version):
    return ".".join(str(version).split(".")[:2])


def compare(ours, theirs, peer):
    """``(errors, warnings)``: what differs between this client's ``ours`` and ``peer``'s
    ``theirs`` (``None``: a peer too old to say, which is a warning).

    >>> compare({"python": "3.11.7", "numpy": "2.1.0"},
    ...         {"python": "3.11.2", "numpy": "1.26.4"}, "the center")
    ([], ['this client has numpy 2.1.0 but the center has numpy 1.26.4'])
    """
    if not theirs:
        return [], [f"{peer} does not say which versions it runs (an older distributed3?)"]
    errors, warnings = [], []
    if _minor(ours.get("python")) != _minor(theirs.get("python")):
        errors.append(
            f"this client runs Python {ours.get('python')} but {peer} runs Python "
            f"{theirs.get('python')}: code defined in a script or notebook travels as "
            "bytecode, which one Python version cannot run from another; run both on the "
            "same Python (major.minor)"
        )
    for name in PACKAGES:
        if name in theirs and ours.get(name) != theirs.get(name):
            warnings.append(f"this client has {name} {ours.get(name)} but {peer} has "
                            f"{name} {theirs.get(name)}")  # fmt: skip
    return errors, warnings
