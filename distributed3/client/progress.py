"""Progress bars for ``map(..., progress=True)``: tqdm when installed, else a plain line.

tqdm draws in a terminal, and as a widget in Jupyter when ipywidgets is installed.  Without tqdm, a
line on stderr shows done/total, rate and ETA, redrawn in place on a terminal
and printed every 10 % elsewhere.

>>> import io
>>> out = io.StringIO()
>>> bar = TextBar(4, "square", file=out, clock=iter(range(100)).__next__)
>>> for _ in range(4):
...     bar.update(1)
>>> bar.close()
>>> out.getvalue().splitlines()[-1]
'square: 4/4 100% [1.0 tasks/s, ETA 0s]'
"""
import sys
import time


class TextBar:
    """A dependency-free progress line: ``name: done/total pct [rate, ETA]``, or
    ``name: done [rate]`` when the total is not known (``total=None``)."""

    def __init__(self, total, desc="tasks", file=None, clock=time.monotonic):
        self.total, self.desc = total, desc
        self.file = file or sys.stderr
        self.clock = clock
        self.start = clock()
        self.n = 0
        self.tty = getattr(self.file, "isatty", lambda: False)()
        self._last_decile = -1

    def update(self, n=1):
        self.n += n
        if self.total is None:  # a stream of unknown length: a line per power of ten
            step = 10 ** max(len(str(self.n)) - 1, 0)
            if self.tty or self.n % step < n:
                self._draw(None)
            return
        pct = 100 * self.n // max(self.total, 1)
        if self.tty or pct // 10 != self._last_decile or self.n >= self.total:
            self._last_decile = pct // 10
            self._draw(pct)

    def _draw(self, pct):
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.n / elapsed
        if pct is None:
            line = f"{self.desc}: {self.n} [{rate:.1f} tasks/s]"
        else:
            eta = (self.total - self.n) / rate if rate else 0
            line = (f"{self.desc}: {self.n}/{self.total} {pct}% "
                    f"[{rate:.1f} tasks/s, ETA {eta:.0f}s]")  # fmt: skip
        self.file.write(("\r" + line) if self.tty else line + "\n")
        self.file.flush()

    def close(self):
        if self.tty:
            self.file.write("\n")
            self.file.flush()


def progress_bar(total, desc):
    """A tqdm bar if tqdm is installed, else a :class:`TextBar`: a widget in Jupyter
    when ipywidgets is there to draw it, else tqdm's text bar (``tqdm.auto`` would warn
    ``IProgress not found`` and draw nothing).

    >>> bar = progress_bar(3, "demo"); bar.update(3); bar.close()
    """
    try:
        if "ipykernel" in sys.modules and _has("ipywidgets"):
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
    except ImportError:
        return TextBar(total, desc)
    return tqdm(total=total, desc=desc, unit="task")


def _has(module):
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None: hidden, as in the tests
        return False
