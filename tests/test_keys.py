"""Handles inside task arguments: found at any depth, sent as ``KeyRef``, swapped back."""
from distributed3.keys import (
    KeyRef,
    Parts,
    element_key,
    element_of,
    extract_keys,
    plain_arguments,
    split_element,
    substitute,
)


def test_remote_data_nested_in_arguments(pool):
    x, y, z = pool.scatter([1, 2, 3])
    out = pool.apply(lambda a, b, c=None: a[0] + b["k"][1] + c, ([x],),
                     {"b": {"k": (0, y)}, "c": z})  # fmt: skip
    assert out.get() == 6
    assert pool.gather([x, 7, y]) == [1, 7, 2]


def test_extract_and_substitute_round_trip():
    class H:
        def __init__(self, key):
            self.key = key

    h1, h2 = H("k1"), H("k2")
    args = ([h1, (1, {"deep": [h2]})], {"plain": 3})
    packed, handles = extract_keys(args, H)
    assert handles == {"k1": h1, "k2": h2}
    assert packed[0][0] == KeyRef("k1")
    assert substitute(packed, {"k1": "one", "k2": "two"}) == (
        ["one", (1, {"deep": ["two"]})], {"plain": 3}
    )
    untouched = {"a": [1, 2]}
    assert extract_keys(untouched, H)[0] is untouched


def test_key_refs_compare_and_pickle_by_key():
    import pickle

    assert KeyRef("x") == KeyRef("x") and KeyRef("x") != KeyRef("y") and KeyRef("x") != "x"
    assert len({KeyRef("x"), KeyRef("x"), KeyRef("y")}) == 2
    assert pickle.loads(pickle.dumps(KeyRef(("tuple", 1)))) == KeyRef(("tuple", 1))


def test_element_keys_resolve_through_their_chunk_until_dropped():
    assert split_element(element_key("f-1#2", 7)) == ("f-1#2", 7)  # the last "#" counts
    assert split_element("f-1#x") is None and split_element("f-1#") is None
    data = {"g": Parts([10, None, 30], gone={1}), "g#1": "a copy of its own"}
    assert [element_of(data, f"g#{i}", "?") for i in range(4)] == [10, "a copy of its own", 30, "?"]
    assert data["g"].drop(0) and not data["g"].drop(0)  # a second drop finds nothing
    assert element_of(data, "g#0", "?") == "?"
    assert not data["g"].drop(5)


def test_only_plain_arguments_skip_the_search_for_handles():
    assert plain_arguments([(1, 2.5, "s", b"b", None, True)])
    assert not plain_arguments([(1, [2])])  # a list may hide a handle
    assert not plain_arguments([1, 2])  # without single, each element is a tuple of arguments
    assert plain_arguments([1, (2, "x")], single=True)
    assert not plain_arguments([{"k": 1}], single=True)
