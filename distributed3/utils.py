"""Small helpers shared by every layer: addresses, loopback checks, waiting, backoff."""
import asyncio
import gc
import ipaddress
import socket
import time

Address = tuple[str, int]  # (host, port): how every address travels inside distributed3


def address_scheme(addr):
    """``"tcp"`` or ``"tls"`` when ``addr`` starts with ``tcp://`` or ``tls://``, else ``None``.

    >>> address_scheme("tls://10.0.0.1:8786"), address_scheme("10.0.0.1:8786")
    ('tls', None)
    >>> address_scheme("udp://x:1")
    Traceback (most recent call last):
    ValueError: address 'udp://x:1': distributed3 speaks tcp:// and tls:// only
    """
    if not isinstance(addr, str) or "://" not in addr:
        return None
    scheme = addr.split("://", 1)[0].lower()
    if scheme not in ("tcp", "tls"):
        raise ValueError(f"address {addr!r}: distributed3 speaks tcp:// and tls:// only")
    return scheme


def parse_address(addr, default_port=None, tls=None):
    """Normalise ``"host:port"``, ``"[::1]:port"`` or ``(host, port)`` to a tuple.

    >>> parse_address("127.0.0.1:8787")
    ('127.0.0.1', 8787)
    >>> parse_address(("localhost", "9000"))
    ('localhost', 9000)
    >>> parse_address("[::1]:8787")
    ('::1', 8787)
    >>> parse_address("127.0.0.1", default_port=8787)
    ('127.0.0.1', 8787)
    >>> parse_address("tcp://127.0.0.1:8787"), parse_address("tls://[::1]:8786")
    (('127.0.0.1', 8787), ('::1', 8786))

    The ``tcp://`` and ``tls://`` forms that dask prints are taken too; ``tls=False``
    (the caller has no TLS settings) refuses a ``tls://`` address.

    >>> parse_address("tls://127.0.0.1:8786", tls=False)
    Traceback (most recent call last):
    ValueError: tls://127.0.0.1:8786 is a TLS address: give tls=TLS(...) (distributed3.core.security)
    """
    if isinstance(addr, (tuple, list)):
        host, port = addr
        return (str(host), int(port))
    if not isinstance(addr, str):
        raise TypeError(f"expected an address like 'host:port', got {addr!r}")
    scheme = address_scheme(addr)
    if scheme == "tls" and tls is False:
        raise ValueError(f"{addr} is a TLS address: give tls=TLS(...) "
                         "(distributed3.core.security)")  # fmt: skip
    if scheme is not None:
        addr = addr[len(scheme) + 3:]
    if addr.startswith("["):  # [ipv6]:port
        host, _, rest = addr[1:].partition("]")
        port = rest.lstrip(":") or default_port
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    elif addr.count(":") > 1:  # bare IPv6
        host, port = addr, default_port
    else:
        host, port = addr, default_port
    if port is None:
        raise ValueError(f"address {addr!r} has no port")
    return (host, int(port))


def format_address(addr):
    """The ``host:port`` text of an address tuple.

    >>> format_address(('127.0.0.1', 8787))
    '127.0.0.1:8787'
    >>> format_address(('::1', 8787))
    '[::1]:8787'
    """
    host, port = parse_address(addr)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def is_loopback(host):
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost).

    >>> is_loopback("127.0.0.2"), is_loopback("::1"), is_loopback("localhost")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("10.0.0.1")
    (False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_ip_for(host):
    """The address of this machine's interface that routes to ``host``.

    Uses a UDP socket's ``connect``, which picks a route but sends no packet.

    >>> local_ip_for("127.0.0.1")
    '127.0.0.1'
    """
    if is_loopback(host):
        return "::1" if ":" in host else "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


async def wait_for(predicate, timeout, message, interval=0.005):
    """Wait until ``predicate()`` is true, or raise ``TimeoutError(message)``.

    >>> asyncio.run(wait_for(lambda: True, 1, "never"))
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} (waited {timeout} s)")
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, 0.1)


class Backoff:
    """Delays between attempts that double from ``first`` up to ``most``; with a
    ``deadline`` (seconds from now), :meth:`wait` says when the next wait would pass it.

    >>> backoff = Backoff(first=0.001, most=0.004)
    >>> async def attempts():
    ...     slept = []
    ...     for _ in range(4):
    ...         slept.append(backoff.delay)
    ...         await backoff.wait()
    ...     return slept
    >>> asyncio.run(attempts())
    [0.001, 0.002, 0.004, 0.004]
    >>> asyncio.run(Backoff(deadline=0).wait())
    False
    """

    __slots__ = ("first", "most", "delay", "deadline")

    def __init__(self, first=0.05, most=1.0, deadline=None):
        self.first = first
        self.most = most
        self.delay = first
        self.deadline = None if deadline is None else time.monotonic() + deadline

    def reset(self):
        """The next wait is the first one again (after an attempt that worked)."""
        self.delay = self.first

    async def wait(self):
        """Sleep the current delay and double it; ``False``, without sleeping, when that
        would go past the deadline."""
        if self.deadline is not None and time.monotonic() + self.delay > self.deadline:
            return False
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.most)
        return True


def wait_for_sync(predicate, timeout, message, interval=0.005):
    """Blocking twin of :func:`wait_for`, for code outside any event loop.

    >>> wait_for_sync(lambda: True, 1, "never")
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} (waited {timeout} s)")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.1)


GC_PAUSE_MIN = 100  # elements: below this, gc_paused(count) does nothing
GC_PROMOTE_MIN = 5000  # elements: from this many, what the block made goes to the oldest


class gc_paused:
    """No cyclic garbage collection inside the block (if it was on, it is on again after).

    For tight loops that make many long-lived objects (one handle per element of a big
    map): CPython would walk every tracked object in the process several times over
    while they pile up, though none of them is garbage.  Keep the block free of awaits
    and of anything that can block, so that the pause stays short.  Given ``count``
    (how many elements the block handles), it pauses only for more than
    ``GC_PAUSE_MIN``: small inputs are not worth the two calls.  The switch is the
    process's: a ``gc.disable()`` made by another thread during the block is undone at
    its end.

    >>> with gc_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """

    __slots__ = ("_pause", "_promote")

    def __init__(self, count=None):
        self._pause = (count is None or count > GC_PAUSE_MIN) and gc.isenabled()
        self._promote = self._pause and count is not None and count >= GC_PROMOTE_MIN

    def __enter__(self):
        if self._pause:
            gc.disable()

    def __exit__(self, *exc):
        if self._promote and not gc.get_freeze_count():
            # what the block made is long-lived: straight into the oldest generation, as
            # a splice of lists, rather than walked through each younger one in turn
            gc.freeze()
            gc.unfreeze()
        if self._pause:
            gc.enable()
