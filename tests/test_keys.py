"""Handles inside task arguments: found at any depth, sent as ``KeyRef``, swapped back."""
from distributed3.keys import KeyRef, extract_keys, substitute


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
