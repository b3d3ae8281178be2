"""The sync facade: blocking calls on top of coroutines.

Every operation is a coroutine first.  Sync callers -- scripts, IPython,
Jupyter, where a loop may already run in the main thread -- submit those
coroutines to one event loop that runs in a daemon thread (``LoopThread``)
and block on the result; ``await``-ing callers on any loop get the same
coroutine through :func:`asyncio.wrap_future`.

>>> lt = loop_thread()
>>> async def add(x, y):
...     return x + y
>>> lt.run_sync(add(1, 2))
3
"""
import asyncio
import os
import threading

_lock = threading.Lock()
_instance = None


class LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True, name="distributed3-loop")
        self.thread.start()
        ready.wait()

    def run_sync(self, coro, timeout=None):
        """Run ``coro`` on this loop and block until it finishes (or ``timeout``)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a blocking distributed3 call was made from its own event loop; "
                "use the async form (e.g. `await pool.amap(...)`)"
            )
        # lighter than run_coroutine_threadsafe (no concurrent Future, no chained
        # callbacks): one wake-up of the loop, one lock released when the task ends
        done = threading.Lock()
        done.acquire()
        box = []

        def start():
            task = self.loop.create_task(coro)
            box.append(task)
            task.add_done_callback(lambda _: done.release())

        self.loop.call_soon_threadsafe(start)
        try:
            if not done.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError(f"the call did not finish within {timeout} s")
        except BaseException:  # KeyboardInterrupt, timeout: stop the coroutine too
            self.loop.call_soon_threadsafe(lambda: box and box[0].cancel())
            raise
        return box[0].result()


def loop_thread():
    """The process-wide :class:`LoopThread`, started on first use (and again after fork)."""
    global _instance
    with _lock:
        if _instance is None or _instance.pid != os.getpid():
            _instance = LoopThread()
        return _instance


async def run_in_loop(coro, loop):
    """Await ``coro`` on ``loop`` from a coroutine running on any loop."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
