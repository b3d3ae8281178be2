"""The wire format's reader: whole messages out of bytes however they are cut."""
import struct

import pytest

from distributed3 import ProtocolError
from distributed3.core.framing import _IN_PLACE, CHUNK, Framer, Limits


def wire(*frames):
    """One message as it travels: its head, then its frames."""
    return struct.pack(f"<Q{len(frames)}Q", len(frames), *map(len, frames)) + b"".join(frames)


def feed(framer, data, cut=None):
    """``data`` into ``framer``, ``cut`` bytes at a time (as much as it takes, else)."""
    view = memoryview(data)
    while view:
        into = framer.get_buffer()
        n = min(len(into), len(view), cut or len(view))
        into[:n] = view[:n]
        del into
        framer.buffer_updated(n)
        view = view[n:]


def messages(framer):
    out = []
    while framer.ready:
        frames, nbytes = framer.ready.popleft()
        assert nbytes == sum(len(f) for f in frames)
        out.append([bytes(f) for f in frames])
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cut", [None, 1, 7, 4096])
def test_messages_come_whole_and_in_order_however_the_bytes_are_cut(cut):
    sent = [[b"a"], [b"head", b"", b"buffer" * 100], [bytes(range(256)) * 300], [b"z"]]
    framer = Framer(Limits(), "peer:1")
    feed(framer, b"".join(wire(*m) for m in sent), cut)
    assert messages(framer) == sent


@pytest.mark.timeout(30)
def test_many_small_messages_in_one_read_are_all_framed():
    framer = Framer(Limits(), "peer:1")
    feed(framer, b"".join(wire(b"%d" % i) for i in range(1000)))
    assert messages(framer) == [[b"%d" % i] for i in range(1000)]


@pytest.mark.timeout(30)
def test_a_big_payload_goes_straight_into_its_buffer():
    """Once its head is in, the rest of a big message is read into the buffer it ends
    up in, not copied there from the read buffer; its frames are writable."""
    payload = bytes(range(256)) * (4 * _IN_PLACE // 256)
    data = wire(b"x" * 10, payload)
    framer = Framer(Limits(), "peer:1")
    feed(framer, data[:1000])
    into = framer.get_buffer()
    assert len(into) == len(data) - 1000  # exactly the rest of it, and no more
    feed(framer, data[1000:], 5000)
    (frames, nbytes), = framer.ready
    assert bytes(frames[1]) == payload and nbytes == 10 + len(payload)
    assert frames[0].obj is into.obj and not frames[1].readonly


@pytest.mark.timeout(30)
def test_a_head_of_many_frames_fits_however_long():
    frames = [b"%d" % i for i in range(20_000)]  # a head of 160 KB: more than CHUNK
    assert 8 * len(frames) > CHUNK
    framer = Framer(Limits(), "peer:1")
    feed(framer, wire(*frames) + wire(b"next"), 3000)
    assert messages(framer) == [frames, [b"next"]]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("head, limits, error", [
    (struct.pack("<Q", 0), Limits(), "peer:1 announced 0 frames"),
    (struct.pack("<Q", 11), Limits(max_frames=10), r"peer:1 announced 11 frames \(limit 10\)"),
    (struct.pack("<QQ", 1, 101), Limits(max_frame_bytes=100),
     r"peer:1 announced a frame of 101 bytes \(limit 100\)"),
    (struct.pack("<QQQ", 2, 60, 60), Limits(max_message_bytes=100),
     r"peer:1 announced a message of 120 bytes \(limit 100\)"),
    (struct.pack("<QQ", 1, 2**40), Limits(max_frame_bytes=2**41, max_message_bytes=2**41),
     "peer:1 announced a message of 1099511627776 bytes, more than this process can allocate"),
])  # fmt: skip
def test_a_head_over_the_limits_is_refused_before_anything_is_allocated(head, limits, error):
    framer = Framer(limits, "peer:1")
    with pytest.raises(ProtocolError, match=error):
        feed(framer, head)
    assert not framer.ready


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(12))
def test_random_messages_in_random_cuts_come_out_whole(seed):
    """Small, big (read in place), empty-framed and many-framed messages, fed in cuts of
    every size: a partial message deep in the read buffer, moved to its front when it
    fills, must keep its place (it did not: the framer read garbage or stalled)."""
    import os
    import random

    rnd = random.Random(seed)
    sent = []
    for _ in range(40):
        kind = rnd.random()
        if kind < 0.6:
            frames = [os.urandom(rnd.randint(0, 30_000)) for _ in range(rnd.randint(1, 3))]
        elif kind < 0.8:
            frames = [os.urandom(rnd.randint(30_000, 200_000))]
        elif kind < 0.9:
            frames = [b""] * rnd.randint(1, 5)
        else:
            frames = [os.urandom(rnd.randint(0, 3)) for _ in range(rnd.randint(4000, 12_000))]
        sent.append(frames)
    data = memoryview(b"".join(wire(*m) for m in sent))
    framer, got = Framer(Limits(), "peer:1"), []
    while data:
        into = framer.get_buffer()
        n = min(len(into), len(data), rnd.choice([1, 7, 100, 3000, 20_000, 70_000, 1 << 20]))
        into[:n] = data[:n]
        del into
        framer.buffer_updated(n)
        data = data[n:]
        got += messages(framer)
    assert got == sent


@pytest.mark.timeout(30)
def test_a_partial_message_moved_to_the_front_keeps_its_place():
    """The case the fuzz above found: a 60 KB message, then a 10 KB one that does not
    fit after it and comes in two short reads."""
    first, second = wire(b"a" * 60_000), wire(b"b" * 10_000)
    framer = Framer(Limits(), "peer:1")
    for part in (first + second[:100], second[100:5000], second[5000:]):
        feed(framer, part)
    assert messages(framer) == [[b"a" * 60_000], [b"b" * 10_000]]
