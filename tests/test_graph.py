"""Task graphs on the cluster: ``pool.get`` as dask's scheduler, ``compute``, ``persist``.

Results are checked against dask's own synchronous scheduler on the same collections.
"""
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from operator import add

import numpy as np
import pytest

from distributed3 import DataLostError, Pool
from distributed3.client.graph import key_name
from distributed3.graph import parse, topological
from distributed3.testing import held, process_cluster
from distributed3.utils import wait_for_sync

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")
delayed = dask.delayed

CALLS = []  # what counted() was called with, on the in-process workers


def counted(x):
    CALLS.append(x)
    return x


def inc(x):
    return x + 1


def tree_sum(n, leaf=inc):
    """A delayed tree reduction over ``n`` leaves: ``2n - 1`` tasks."""
    layer = [delayed(leaf)(i) for i in range(n)]
    while len(layer) > 1:
        layer = [delayed(add)(*layer[i:i + 2]) if i + 1 < len(layer) else layer[i]
                 for i in range(0, len(layer), 2)]  # fmt: skip
    return layer[0]


def test_tuple_graph_with_nested_keys(pool):
    dsk = {"x": 1, "y": (inc, "x"), "z": (add, "y", "x"), "w": (sum, ["x", "y", (inc, "z")])}
    assert pool.get(dsk, "z") == 3
    assert pool.get(dsk, ["w", ["y", "x"]]) == [7, [2, 1]]
    with pytest.raises(KeyError, match="'nope'"):
        pool.get(dsk, "nope")


@pytest.mark.parametrize("name", ["sum", "mean axis 0", "matmul", "rechunk std", "map_blocks"])
def test_dask_array_results_equal_dasks_own(pool, name):
    x = da.random.RandomState(0).random((600, 600), chunks=(150, 150))
    expr = {
        "sum": lambda: x.sum(),
        "mean axis 0": lambda: x.mean(axis=0),
        "matmul": lambda: (x @ x.T)[::50, ::50],
        "rechunk std": lambda: x.rechunk((300, 75)).std(axis=1),
        "map_blocks": lambda: x.map_blocks(lambda b: b * 2 + 1).sum(axis=0),
    }[name]()
    np.testing.assert_allclose(expr.compute(scheduler=pool.get), expr.compute(scheduler="sync"))


def test_dask_bag_and_config_scheduler(pool):
    bag = db.from_sequence(range(200), npartitions=8).map(lambda v: v * 3).filter(lambda v: v % 2)
    with dask.config.set(scheduler=pool.get):
        assert bag.sum().compute() == bag.sum().compute(scheduler="sync")
        assert sorted(bag.frequencies().compute()) == sorted(
            bag.frequencies().compute(scheduler="sync"))


def test_delayed_diamond_and_thousand_task_tree(pool):
    a = delayed(inc)(1)
    b, c = delayed(inc)(a), delayed(lambda v: v * 10)(a)
    assert delayed(add)(b, c).compute(scheduler=pool.get) == 23
    assert tree_sum(500).compute(scheduler=pool.get) == sum(range(1, 501))


def test_ten_thousand_tasks_right_and_nothing_left_on_workers(pool, workers):
    assert tree_sum(5000).compute(scheduler=pool.get) == sum(range(1, 5001))
    wait_for_sync(lambda: not any(w.data for w in workers), 5, "results left on workers")


HELD = []  # keys held by the in-process workers when each big() ran
WORKERS = []


def big(i):
    HELD.append(sum(len(w.data) for w in WORKERS))
    return np.full(125_000, float(i))  # 1 MB


def test_intermediates_are_released_as_soon_as_no_task_needs_them(pool, workers):
    WORKERS[:], HELD[:] = workers, []
    total = tree_sum(300, leaf=big).compute(scheduler=pool.get)
    assert float(total.sum()) == sum(range(300)) * 125_000
    # 599 results in all; kept until the end, the last leaves would see ~500 of them
    assert len(HELD) == 300 and max(HELD) < 100, max(HELD)


def test_a_raising_task_raises_its_own_error_and_stops_the_graph(pool, workers):
    CALLS.clear()
    dsk = {"x": (lambda: 1 / 0,), "y": (counted, "x"), "z": (counted, 5)}
    with pytest.raises(ZeroDivisionError) as info:
        pool.get(dsk, ["y", "z"])
    assert "1 / 0" in str(info.value.__cause__)  # the remote traceback
    assert CALLS in ([], [5])
    wait_for_sync(lambda: not any(w.data for w in workers), 5, "results left on workers")


def boom_at(x, bad=777):
    if x == bad:
        raise ValueError(f"boom at {x}")
    return x


def test_a_failed_graph_leaves_nothing_even_while_its_error_is_held(pool, workers):
    dsk = {f"a{i}": (boom_at, i) for i in range(3000)}  # tiny: several to a message
    dsk["s"] = (sum, [f"a{i}" for i in range(3000)])
    with pytest.raises(ValueError, match="boom at 777") as info:
        pool.get(dsk, "s")
    assert info.value is not None  # held, with its traceback, while we look
    wait_for_sync(lambda: not any(w.data for w in workers), 5, "results left on workers")


def test_remote_data_inside_graphs_and_delayed_calls(pool):
    rd = pool.scatter([10])[0]
    assert pool.get({"y": (add, rd, 1)}, "y") == 11
    assert pool.get({"x": rd, "y": (inc, "x")}, "y") == 11
    assert delayed(add)(rd, 1).compute(scheduler=pool.get) == 11
    assert delayed(sum)([rd, [rd][0], 1]).compute(scheduler=pool.get) == 21
    assert rd.get() == 10  # still there: a graph never releases what it was given


def test_a_graph_waits_for_the_handles_it_is_given(pool, gate):
    running = pool.submit(held, 4)  # runs until the gate opens
    dsk = {"x": running, "y": (inc, "x"), "z": (add, running, 1)}
    with ThreadPoolExecutor(1) as ex:
        answer = ex.submit(pool.get, dsk, ["y", "z"])
        assert running.status == "pending"
        gate.set()
        assert answer.result(30) == [5, 5]


def test_compute_leaves_results_on_the_workers(pool):
    total = pool.compute(delayed(sum)([1, 2, 3]))
    assert total.status == "finished" and total.get() == 6
    first, second, plain = pool.compute([da.arange(10, chunks=3).sum(), delayed(inc)(1), 7])
    assert (int(first.get()), second.get(), plain) == (45, 2, 7)
    assert pool.who_has([first])[first.key]


def test_persist_then_two_computations_do_not_run_it_again(pool):
    CALLS.clear()
    x = da.arange(20, chunks=5).map_blocks(counted, meta=np.array((), dtype=int))
    kept = pool.persist(x)
    assert len(CALLS) == 4
    assert int(kept.sum().compute(scheduler=pool.get)) == 190
    assert int((kept * 2).max().compute(scheduler=pool.get)) == 38
    assert len(CALLS) == 4
    again = x.persist(scheduler=pool.get)  # dask's own persist, through the pool
    (third,) = dask.persist(x, scheduler=pool.get)
    assert len(CALLS) == 12 and int(again.sum().compute(scheduler=pool.get)) == 190
    assert int(third.max().compute(scheduler=pool.get)) == 19 and len(CALLS) == 12
    CALLS[4:] = []
    d = pool.persist(delayed(counted)(3))
    assert (d + 1).compute(scheduler=pool.get) == 4 and d.compute(scheduler=pool.get) == 3
    assert len(CALLS) == 5


def test_lost_persisted_data_is_a_clear_error(pool):
    (rd,) = pool.scatter([1])
    pool.delete([rd])
    with pytest.raises(DataLostError):
        pool.get({"y": (inc, rd)}, "y")


def test_tuple_graphs_run_without_dask_installed(center):
    code = (
        "import sys; sys.modules['dask'] = None\n"  # import dask fails, as if not installed
        "from operator import add\n"
        "from distributed3 import Pool\n"
        f"with Pool({center.address[0]!r} + ':' + str({center.address[1]})) as pool:\n"
        "    print(pool.get({'x': 1, 'y': (add, 'x', 10), 'z': (sum, ['x', 'y'])}, ['z', 'y']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[12, 11]", out.stderr


def test_parse_and_order_without_dask():
    g = parse({"a": 1, "b": (inc, "a"), "c": (add, "a", "b"), "d": 5}, legacy=True)
    assert g.nodes["c"]({"a": 1, "b": 2}) == 3
    assert g.order() == topological(g.dependencies)
    assert sorted(g.cull(["b"]).nodes) == ["a", "b"]
    from dask._task_spec import Task, TaskRef

    with pytest.raises(KeyError, match="'missing', which 'c' needs"):
        parse({"c": Task("c", inc, TaskRef("missing"))})
    with pytest.raises(ValueError, match="cycle"):
        topological({"a": {"b"}, "b": {"a"}})
    with pytest.raises(ValueError, match="cycle through 'x'"):
        parse({"x": (inc, "x")}, legacy=True).order()


def test_handles_hash_by_key_for_dask(pool):
    (a,) = pool.scatter([1])
    assert dask.base.tokenize(a) == dask.base.tokenize(a) != dask.base.tokenize(pool.scatter([1])[0])


def test_persist_a_dataframe(pool):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"k": [i % 3 for i in range(30)], "v": range(30)})
    kept = pool.persist(dd.from_pandas(df, npartitions=4))
    assert int(kept.v.sum().compute(scheduler=pool.get)) == 435
    assert kept.groupby("k").v.sum().compute(scheduler=pool.get).to_dict() == {0: 135, 1: 145, 2: 155}


def test_key_names():
    assert key_name(("getitem-0123456789abcdef", 1, 2)) == "getitem"
    assert key_name("x#1") == "x_1"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill_9_of_a_worker_mid_graph_gives_the_right_answer():
    def slow_inc(x):  # local: it travels by value to the worker processes
        time.sleep(0.01)
        return x + 1

    with process_cluster(nworkers=3) as (address, _, workers):
        with Pool(address) as pool:
            graph = tree_sum(300, leaf=slow_inc)  # 599 tasks, 2 s on 3 cores
            killer = threading.Timer(0.8, workers[1].kill)
            start = time.monotonic()
            killer.start()
            try:
                assert graph.compute(scheduler=pool.get) == sum(range(1, 301))
            finally:
                killer.join()
            assert time.monotonic() - start > 0.8  # it died mid-graph
            assert workers[1].proc.poll() is not None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_kill_that_needs_released_intermediates_computes_them_again():
    """c_i reads b_i and b_{i+1}, each released once both of its readers ran: a dead
    worker's c_i are made again from b's that are gone, made again from a's."""
    def make(i):  # local: they travel by value to the worker processes
        return np.full(10_000, float(i))

    def step(a, seconds):
        time.sleep(seconds)
        return a + 1

    def pair(a, b, seconds):
        time.sleep(seconds)
        return a + b

    n = 12
    dsk = {"s": (lambda *xs: float(sum(x.sum() for x in xs)), *[f"c{i}" for i in range(n)])}
    for i in range(n):
        dsk[f"a{i}"] = (make, i)
        dsk[f"b{i}"] = (step, f"a{i}", 0.05)
        dsk[f"c{i}"] = (pair, f"b{i}", f"b{(i + 1) % n}", 0.25)
    expected = dask.get(dsk, "s")
    with process_cluster(nworkers=2) as (address, _, workers):
        with Pool(address) as pool:
            killer = threading.Timer(1.0, workers[0].kill)
            killer.start()
            try:
                assert pool.get(dsk, "s") == expected
            finally:
                killer.join()
            assert workers[0].proc.poll() is not None


def test_persist_passes_through_what_is_not_a_collection(pool):
    """As ``dask.persist`` and ``pool.compute`` do (it raised AttributeError)."""
    import dask.array as da

    x = da.arange(10, chunks=5)
    kept, five, text = pool.persist([x + 1, 5, "text"])
    assert (five, text) == (5, "text")
    assert int(kept.sum().compute(scheduler=pool.get)) == 55
    assert pool.persist(7) == 7


@pytest.mark.timeout(60)
def test_a_graph_holding_another_clusters_result_fails_naming_both(pool):
    with Pool(n_workers=1) as other:
        theirs = other.scatter([5])[0]
        where = r"the cluster at 127\.0\.0\.1:\d+, not of this one"
        with pytest.raises(ValueError, match=where):
            pool.get({"x": theirs, "y": (inc, "x")}, "y")
        with pytest.raises(ValueError, match=where):
            pool.get({"y": (inc, theirs)}, "y")
    assert pool.get({"x": pool.scatter([5])[0], "y": (inc, "x")}, "y") == 6
