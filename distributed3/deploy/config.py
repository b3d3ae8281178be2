"""Options of ``dcenter`` and ``dworker`` from the environment and a config file.

Every option can be set three ways; the first that says something wins:

1. the command line: ``dworker HOST:8787 --memory-limit 4GB``;
2. the environment: ``DISTRIBUTED3_WORKER_MEMORY_LIMIT=4GB`` (``DISTRIBUTED3_CENTER_PORT``
   for ``dcenter --port``: the command, then the option's long name, in capitals with
   ``_`` for ``-``; a flag such as ``--no-nanny`` takes ``1``/``true``/``yes``);
3. a TOML file, ``$DISTRIBUTED3_CONFIG`` or ``~/.config/distributed3/config.toml``::

       [center]
       port = 8786
       heartbeat-timeout = 30

       [worker]
       memory-limit = "auto"
       nprocs = "4"

An unknown option in the file is an error that names it, not a silent no-op.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> _ = parser.add_argument("--port", type=int, default=8787)
>>> apply_config(parser, "center", environ={"DISTRIBUTED3_CENTER_PORT": "9000"})
>>> parser.parse_args([]).port, parser.parse_args(["--port", "1"]).port
(9000, 1)
"""
import os
import re
import sys
import tomllib

__all__ = ["apply_config", "config_path"]

TRUE = {"1", "true", "yes", "on"}


def config_path(environ=os.environ):
    """The config file to read: ``$DISTRIBUTED3_CONFIG``, else the user's default."""
    default = os.path.join(os.path.expanduser("~"), ".config", "distributed3", "config.toml")
    return environ.get("DISTRIBUTED3_CONFIG") or default


def apply_config(parser, command, environ=os.environ):
    """Set ``parser``'s defaults from the ``[command]`` table of the config file, then
    from ``DISTRIBUTED3_<COMMAND>_<OPTION>`` variables; the command line still wins."""
    known = parser.format_help()
    defaults = {}
    path = config_path(environ)
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f).get(command, {})
        except (OSError, tomllib.TOMLDecodeError) as e:
            sys.exit(f"error: cannot read config file {path}: {e}")
        for name, value in table.items():
            if f"--{name}" not in known:
                sys.exit(f"error: config file {path}: [{command}] has no option {name!r}")
            defaults[name.replace("-", "_")] = value
    prefix = f"DISTRIBUTED3_{command.upper()}_"
    for var, value in environ.items():
        if var.startswith(prefix) and not _service_link(var, value):
            name = var[len(prefix):].lower().replace("_", "-")
            if f"--{name}" not in known:
                sys.exit(f"error: {var} names no option of {command} (--{name})")
            dest = name.replace("-", "_")
            flag = parser.get_default(dest) is False  # a flag: its text is yes or no
            defaults[dest] = value.strip().lower() in TRUE if flag else value
    parser.set_defaults(**defaults)
    parser.epilog = (f"Options may also come from {prefix}<OPTION> environment variables "
                     f"and the [{command}] table of {path}.")  # fmt: skip


def _service_link(var, value):
    """Whether ``var`` is one of the variables Kubernetes sets in every pod for a Service
    (``DISTRIBUTED3_CENTER_SERVICE_HOST``, ``..._PORT=tcp://10.0.0.7:8787`` for a Service
    named ``distributed3-center``): not an option, whatever its name looks like.

    >>> _service_link("DISTRIBUTED3_CENTER_PORT", "tcp://10.0.0.7:8787")
    True
    >>> _service_link("DISTRIBUTED3_CENTER_PORT", "8786")
    False
    """
    if value.startswith(("tcp://", "udp://", "sctp://")):
        return True
    return "_SERVICE_" in var or re.search(r"_PORT_\d+_(TCP|UDP|SCTP)", var) is not None
