"""Placement and sizing decisions, with made-up tables: alice has x, bob has y."""
import pytest

from distributed3.scheduling import (
    CHUNK_SECONDS,
    MAX_CHUNK,
    TaskTimes,
    adaptive_chunksize,
    decide_worker,
    least_loaded,
    local_bytes,
    split_by_worker,
    spread,
    steal_choice,
)

NCORES = {"alice": 2, "bob": 2, "carol": 1}


def test_most_local_bytes_wins():
    who_has = {"x": {"alice"}, "y": {"bob"}, "z": {"bob"}}
    nbytes = {"x": 100, "y": 60, "z": 60}
    assert decide_worker(["x", "y", "z"], who_has, nbytes, NCORES, {}) == "bob"
    assert decide_worker(["x", "y"], who_has, nbytes, NCORES, {}) == "alice"


def test_ties_go_to_the_least_loaded_holder():
    who_has = {"x": {"alice", "bob"}}
    assert decide_worker(["x"], who_has, {"x": 10}, NCORES, {"alice": 3, "bob": 1}) == "bob"
    assert decide_worker(["x"], who_has, {"x": 10}, NCORES, {"alice": 0, "bob": 1}) == "alice"


def test_unknown_sizes_count_as_one_byte():
    who_has = {"x": {"alice"}, "y": {"bob"}, "z": {"bob"}}
    assert decide_worker(["x", "y", "z"], who_has, {}, NCORES, {}) == "bob"


def test_dead_holders_are_ignored():
    who_has = {"x": {"dave"}}  # dave is not among the live workers
    assert decide_worker(["x"], who_has, {"x": 10**9}, NCORES, {"alice": 4, "bob": 4}) == "carol"


def test_no_inputs_means_least_loaded_by_cores():
    assert least_loaded(NCORES, {"alice": 2, "bob": 1, "carol": 1}) == "bob"
    assert least_loaded(NCORES, {"alice": 0}) == "alice"  # order breaks ties
    with pytest.raises(ValueError, match="no workers"):
        least_loaded({}, {})
    with pytest.raises(ValueError):
        decide_worker([], {}, {}, {}, {})


def test_local_bytes():
    assert local_bytes([], {}, {}) == {}
    assert local_bytes(["x", "x2"], {"x": {"alice"}, "x2": {"alice"}}, {"x": 3, "x2": 4}) == {
        "alice": 7
    }


def test_spread_weights_by_cores():
    out = spread(10, NCORES)
    assert out.count("alice") == 4 and out.count("bob") == 4 and out.count("carol") == 2
    assert spread(0, NCORES) == []
    with pytest.raises(ValueError):
        spread(3, {})


def test_split_by_worker_prefers_fewest_requests():
    who_has = {"a": {"alice", "bob"}, "b": {"bob"}, "c": {"bob", "carol"}}
    assert split_by_worker(["b", "a", "c"], who_has) == {"bob": ["b", "a", "c"]}
    assert split_by_worker(["a"], who_has, preferred="alice") == {"alice": ["a"]}
    with pytest.raises(KeyError):
        split_by_worker(["lost"], who_has)


def test_adaptive_chunksize_one_by_one_for_small_maps_else_eight_chunks_per_core():
    assert adaptive_chunksize(64, 2) == 1  # up to 32 tasks per core: no chunks
    assert adaptive_chunksize(65, 2) == 5  # then about 8 chunks per core: ceil(65 / 16)
    assert adaptive_chunksize(1000, 4) == 32
    assert adaptive_chunksize(1000, 0) == adaptive_chunksize(1000, 1) == 125  # no cores yet
    assert adaptive_chunksize(10**9, 1) == MAX_CHUNK


def test_adaptive_chunksize_sends_enough_work_per_message_once_task_times_are_known():
    tiny = CHUNK_SECONDS / 100  # a hundred such tasks make one message's worth
    assert adaptive_chunksize(10, 64, seconds=tiny) == 10  # never more than there are
    assert adaptive_chunksize(10_000, 64, seconds=tiny) == 100  # not 20: too little work
    assert adaptive_chunksize(10_000, 64, seconds=1.0) == 20  # slow tasks: the usual spread
    assert adaptive_chunksize(50, 64, seconds=0.0) == 50  # however fast, a bounded count


def test_task_times_average_per_function_and_keywords_and_forget_the_oldest():
    times = TaskTimes(size=2)
    f, g, h = {"function": b"f"}, {"function": b"g"}, {"function": b"h"}
    times.note(f, 0.004, 2)
    times.note(f, 0.012, 3)  # a mean of the maps: (0.002 + 0.004) / 2
    assert times.get(f) == pytest.approx(0.003)
    assert times.get({"function": b"f", "kwargs": {"n": 1}}) is None  # other keywords
    times.note(g, 1.0, 0)  # every task failed: nothing learnt
    assert times.get(g) is None
    times.note(g, 0.1, 1)
    times.note(f, 0.003, 1)  # f noted again: g is now the oldest
    times.note(h, 0.5, 1)
    assert times.get(g) is None and times.get(f) is not None and times.get(h) == 0.5
    assert times.get({"function": None}) is None  # a stateful pool's calls have no function


def test_an_idle_worker_steals_from_the_longest_queue_whose_last_task_is_cheap_to_move():
    queues = {"alice": ["a1", "a2", "a3"], "bob": ["b1", "b2"], "carol": []}
    costs = {"a3": 10_000, "b2": 10}
    assert steal_choice(queues, costs.get, 4096) == "bob"
    assert steal_choice(queues, costs.get, 10_000) == "alice"
    assert steal_choice(queues, costs.get, 5) is None
    assert steal_choice({}, costs.get, 4096) is None

