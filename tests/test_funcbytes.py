"""A function pickled by value is pickled once, and again whenever what it holds changed
(core/funcbytes.py): the bytes are reused, and never stale."""
import pickle
import sys
import types

import pytest

from distributed3.core.protocol import dumps_function, loads_function

SCRIPT = '''
import math
from math import sqrt

SCALE = 2
TABLE = [1, 2]
OFFSET = (1, ("a", 2.0))


def scaled(x):
    return x * SCALE


def listed(x):
    return x + sum(TABLE)


def helper(x):
    return x + SCALE


def calls_helper(x):
    return helper(x) * 10


def countdown(n):
    return 0 if n == 0 else 1 + countdown(n - 1)


def rooted(x, power=2):
    return math.sqrt(x) ** power + OFFSET[0]


def root(x):
    return sqrt(x)


def appends(x):
    note(x)
    return len(NOTES)


NOTES = []
note = NOTES.append
COUNT = 0


class Config:
    scale = 1


def configured(x):
    return x * Config.scale


def bump():
    global COUNT
    COUNT += 1
    return COUNT
'''


@pytest.fixture
def script():
    """The globals of a script run as ``__main__``: its functions pickle by value."""
    namespace = {"__name__": "__main__"}
    exec(compile(SCRIPT, "<a script>", "exec"), namespace)
    return types.SimpleNamespace(**{"ns": namespace}, **{
        k: v for k, v in namespace.items() if isinstance(v, types.FunctionType)})


def shipped(func):
    """``func`` as a worker gets it: pickled, then unpickled from the bytes."""
    return pickle.loads(dumps_function(func))


def test_a_function_of_immutable_state_is_pickled_once(script):
    for func in (script.scaled, script.calls_helper, script.countdown, script.rooted,
                 script.root):
        assert dumps_function(func) is dumps_function(func), func.__name__
    assert shipped(script.countdown)(3) == 3
    assert shipped(script.rooted)(9) == 10.0


def test_a_rebound_global_is_shipped_new(script):
    first = dumps_function(script.scaled)
    assert pickle.loads(first)(5) == 10
    script.ns["SCALE"] = 3
    assert dumps_function(script.scaled) is not first
    assert shipped(script.scaled)(5) == 15
    script.ns["SCALE"] = 3.0  # equal, but another object (and type): not the old bytes
    assert type(shipped(script.scaled)(5)) is float


def test_a_mutable_global_is_pickled_every_time(script):
    assert shipped(script.listed)(0) == 3
    script.ns["TABLE"].append(10)  # the same list, new contents
    assert shipped(script.listed)(0) == 13
    assert dumps_function(script.listed) is not dumps_function(script.listed)


def test_a_builtin_bound_to_a_mutable_object_is_not_trusted(script):
    """``note = NOTES.append`` pickles with its list: the list's contents count."""
    assert shipped(script.appends)(1) == 1
    script.ns["NOTES"].extend([7, 8])
    assert shipped(script.appends)(1) == 3
    assert dumps_function(script.appends) is not dumps_function(script.appends)


def test_a_called_function_of_the_script_is_checked_too(script):
    assert shipped(script.calls_helper)(1) == 30
    script.ns["SCALE"] = 5  # read by helper, not by calls_helper itself
    assert shipped(script.calls_helper)(1) == 60
    script.ns["helper"] = lambda x: -x  # the name rebound to another function
    assert shipped(script.calls_helper)(1) == -10


def test_defaults_closures_code_and_attributes_are_watched(script):
    assert shipped(script.rooted)(4) == 5.0
    script.rooted.__defaults__ = (3,)
    assert shipped(script.rooted)(4) == 9.0
    script.rooted.__code__ = (lambda x, power=2: -x).__code__
    assert shipped(script.rooted)(4) == -4

    def make(n):
        def add(x):
            return x + n

        def bump(k):
            nonlocal n
            n = k

        return add, bump

    add, bump = make(1)
    assert shipped(add)(1) == 2
    bump(100)
    assert shipped(add)(1) == 101
    add.note = "an attribute"
    assert shipped(add).note == "an attribute"


def test_a_module_imported_since_is_pickled_again(script):
    """cloudpickle lists the submodules a function may reach: one imported after the
    first pickle must be in the next."""
    before = dumps_function(script.rooted)
    sys.modules["distributed3_test_fresh_module"] = types.ModuleType("fresh")
    try:
        assert dumps_function(script.rooted) is not before
        assert dumps_function(script.rooted) is dumps_function(script.rooted)
    finally:
        del sys.modules["distributed3_test_fresh_module"]


def test_functions_pickled_by_reference_are_not_kept():
    assert pickle.loads(dumps_function(len)) is len
    assert loads_function(dumps_function(abs))(-2) == 2


def test_tasks_see_a_global_rebound_between_submits(pool, script):
    """The user-facing promise: a script changing a global between calls gets tasks
    that use the new value, through submit, apply and map."""
    assert pool.submit(script.scaled, 4).result(timeout=10) == 8
    script.ns["SCALE"] = 7
    assert pool.submit(script.scaled, 4).result(timeout=10) == 28
    assert pool.apply(script.scaled, (1,)).get() == 7
    script.ns["TABLE"].append(5)
    assert pool.gather(pool.map(script.listed, [0, 1])) == [8, 9]


def test_nothing_big_or_mutable_is_held_by_the_cache(script):
    """A function that uses a big array, or whose pickle is big, is pickled anew each
    time, and the cache does not keep the array alive once the script dropped it."""
    import gc
    import weakref

    import numpy as np

    script.ns["TABLE"] = np.arange(100_000)
    gone = weakref.ref(script.ns["TABLE"])
    assert shipped(script.listed)(0) == sum(range(100_000))
    script.ns["TABLE"] = [1]
    gc.collect()
    assert gone() is None
    assert shipped(script.listed)(1) == 2

    script.ns["OFFSET"] = (b"x" * 100_000,)  # immutable, but its pickle is too big to keep
    assert len(dumps_function(script.rooted)) > 100_000
    assert dumps_function(script.rooted) is not dumps_function(script.rooted)


def test_a_kept_pickle_does_not_keep_its_function_alive(script):
    """A recursive closure names itself; the cache holds functions weakly, so one that
    the script dropped goes, with its entry."""
    import gc
    import weakref

    from distributed3.core import funcbytes

    def make(n):
        def walk(k):
            return n if k == 0 else walk(k - 1)

        return walk

    refs = []
    for n in range(50):
        walk = make(n)
        assert shipped(walk)(3) == n
        assert dumps_function(walk) is dumps_function(walk)  # kept: all it holds is immutable
        refs.append(weakref.ref(walk))
    countdown = weakref.ref(script.countdown)
    assert dumps_function(script.countdown) is dumps_function(script.countdown)
    del walk, script.countdown, script.ns["countdown"]
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    assert countdown() is None
    assert not any(type(f) is types.FunctionType and f.__name__ in ("walk", "countdown")
                   for f in funcbytes._cache.keys())  # fmt: skip


# -- on a worker: the function unpickled from bytes seen before --------------------------


def test_a_worker_reuses_a_function_only_where_unpickling_again_gives_the_same(script):
    """Each task sees its function's globals as they were sent: one that a task rebound
    is unpickled anew for the next, and a function of a script's class (its attributes
    are set anew by each unpickling) is never reused."""
    data = dumps_function(script.scaled)
    assert loads_function(data) is loads_function(data)
    data = dumps_function(script.bump)
    assert loads_function(data)() == 1
    assert loads_function(data)() == 1  # not 2: COUNT as sent, not as the last task left it
    data = dumps_function(script.configured)
    assert loads_function(data) is not loads_function(data)


def test_a_worker_keeps_no_closure_over_a_big_array(script):
    """A closure over a 5 MB array pickles 5 MB: kept, every such task would stay in the
    worker's memory, uncounted (10 MB a call in a helper's reproducer)."""
    import gc
    import weakref

    import numpy as np

    def make(array):
        def first(x):
            return float(array[0]) + x

        return first

    data = dumps_function(make(np.full(5 << 17, 3.0)))
    func = loads_function(data)
    assert func(1) == 4.0
    gone = weakref.ref(func)
    del func
    gc.collect()
    assert gone() is None


def test_a_script_class_changed_between_calls_reaches_the_worker(script):
    """A real worker process, as a script's tasks meet it: the class's attribute as the
    caller set it before each call, also when the pickled bytes repeat."""
    from distributed3 import Pool
    from distributed3.testing import process_cluster

    with process_cluster(1) as (address, _, _), Pool(address) as pool:
        got = []
        for scale in [1, 2, 1, 2, 3, 1]:
            script.ns["Config"].scale = scale
            got.append(pool.apply(script.configured, (10,)).get())
            script.ns["COUNT"] = 0
            assert pool.submit(script.bump).result(timeout=10) == 1
        assert got == [10, 20, 10, 20, 30, 10]


# -- found by a review: races, by-reference changes, odd objects ---------------------------


def test_a_global_rebound_while_pickling_is_never_kept_stale(script, monkeypatch):
    """Another thread rebinding a global between the witness and the pickle: the kept
    pickle must not stand for the new value."""
    from distributed3.core import protocol

    real = protocol.cloudpickle_dumps

    def pickle_then_rebind(func, *args, **kwargs):
        data = real(func, *args, **kwargs)
        script.ns["SCALE"] = 3  # as another thread would, right after the pickle
        return data

    monkeypatch.setattr(protocol, "cloudpickle_dumps", pickle_then_rebind)
    assert pickle.loads(dumps_function(script.scaled))(1) == 2  # pickled with SCALE = 2
    monkeypatch.setattr(protocol, "cloudpickle_dumps", real)
    assert shipped(script.scaled)(1) == 3


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("d3_test_tools", "d3_test_byvalue"):
        sys.modules.pop(name, None)


def test_a_module_registered_to_pickle_by_value_later_is_shipped_by_value(module_dir):
    import cloudpickle

    (module_dir / "d3_test_byvalue.py").write_text("def helper(x):\n    return x + 1\n")
    import d3_test_byvalue

    namespace = {"__name__": "__main__", "mod": d3_test_byvalue}
    exec("def f(x):\n    return mod.helper(x)\n", namespace)
    first = dumps_function(namespace["f"])
    assert b"def helper" not in first and dumps_function(namespace["f"]) is first
    cloudpickle.register_pickle_by_value(d3_test_byvalue)
    try:
        again = dumps_function(namespace["f"])
        assert again is not first and b"d3_test_byvalue" in again
    finally:
        cloudpickle.unregister_pickle_by_value(d3_test_byvalue)
    assert dumps_function(namespace["f"]) is not again


def test_a_function_reloaded_under_its_name_is_pickled_again(module_dir):
    """IPython's autoreload: the module reloaded, the old function given the new code."""
    import importlib

    path = module_dir / "d3_test_tools.py"
    path.write_text("def helper():\n    return 'old'\n")
    import d3_test_tools

    namespace = {"__name__": "__main__"}
    exec("from d3_test_tools import helper\ndef f():\n    return helper()\n", namespace)
    first = dumps_function(namespace["f"])
    assert dumps_function(namespace["f"]) is first
    old = d3_test_tools.helper
    path.write_text("def helper():\n    return 'new, edited'\n")
    importlib.reload(d3_test_tools)
    old.__code__ = d3_test_tools.helper.__code__
    again = dumps_function(namespace["f"])
    assert again is not first
    sys.modules.pop("d3_test_tools")  # as on a worker that never saw the edit
    assert pickle.loads(again)() == "new, edited"


def test_objects_the_witness_cannot_check_are_pickled_each_time(script):
    class LooksLikeAClass:  # as a lazy proxy of a class: isinstance(x, type) holds
        @property
        def __class__(self):
            return type

        def __reduce__(self):
            return (int, ())

    script.ns["OFFSET"] = (LooksLikeAClass(),)
    assert dumps_function(script.rooted) is not dumps_function(script.rooted)
    nest = ()
    for _ in range(600):
        nest = (nest,)
    script.ns["OFFSET"] = (1, nest)
    assert shipped(script.rooted)(4) == 5.0
    assert dumps_function(script.rooted) is not dumps_function(script.rooted)


def test_a_kept_state_holds_a_big_tuple_as_itself_and_no_function_strongly(script):
    import gc
    import weakref

    from distributed3.core import funcbytes

    script.ns["OFFSET"] = big = tuple(range(5000))
    assert dumps_function(script.rooted) is dumps_function(script.rooted)
    assert any(v is big for v in funcbytes._cache[script.rooted].state[10])  # compared by identity

    def helper():
        return 1

    script.ns["OFFSET"] = frozenset({("h", helper)})
    gone = weakref.ref(helper)
    dumps_function(script.rooted)
    script.ns["OFFSET"] = (0,)
    del helper
    gc.collect()
    assert gone() is None
