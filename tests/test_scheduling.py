"""Placement decisions, with made-up tables: alice has x, bob has y."""
import pytest

from distributed3.scheduling import decide_worker, least_loaded, local_bytes, split_by_worker, spread

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
