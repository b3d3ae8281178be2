"""Security: TLS, secrets on the command line, connection caps, slow peers, fuzzing."""
import asyncio
import os
import re
import socket
import stat
import struct

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributed3 import AuthenticationError, ConnectionBrokenError, Pool
from distributed3.core.comm import Limits, connect
from distributed3.core.handshake import _CLIENT_HELLO, _SERVER_HELLO, MAGIC, VERSION
from distributed3.core.server import Server, rpc
from distributed3.core.protocol import dumps, dumps_function
from distributed3.core.security import TLS
from distributed3.testing import BIN, Proc, cluster, cluster_in_thread, gen_test
from distributed3.utils import wait_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two unrelated CAs; a certificate for 127.0.0.1 signed by each."""
    root = tmp_path_factory.mktemp("pki")
    files = {}
    for name in ("good", "evil"):
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        files[name] = TLS(
            cert=str(root / f"{name}-cert.pem"), key=str(root / f"{name}-key.pem"),
            ca=str(root / f"{name}-ca.pem"),
        )  # fmt: skip
        cert.cert_chain_pems[0].write_to_path(files[name].cert)
        cert.private_key_pem.write_to_path(files[name].key)
        ca.cert_pem.write_to_path(files[name].ca)
    return files


# -- TLS --------------------------------------------------------------------------


def test_mutual_tls_cluster_and_pool(pki):
    with cluster_in_thread(2, secret="s", tls=pki["good"]) as (center, workers):
        with Pool(center.address, secret="s", tls=pki["good"]) as pool:
            A = pool.map(lambda x: x + 1, range(10))
            assert pool.apply(sum, [A]).get() == 55  # worker-to-worker fetch over TLS too
            assert sum(i["peer_bytes_in"] for i in pool.worker_info().values()) > 0
            assert all(c.stream.socket.version().startswith("TLS")
                       for c in center.comms)  # fmt: skip


@pytest.mark.timeout(60)
def test_data_of_every_size_crosses_tls_whole(pki):
    """TLS connections are framed by our framer through tornado's SSLIOStream: messages
    of every size around its 16 KB records and 64 KB buffer, and big ones read into
    place, arrive whole -- at the client and from worker to worker."""
    import numpy as np

    sizes = [0, 1, 4_000, 16_383, 16_385, 30_000, 33_000, 65_000, 66_000, 70_000, 3_000_000]
    arrays = [np.arange(n, dtype=np.uint8) for n in sizes]
    with cluster_in_thread(2, secret="s", tls=pki["good"]) as (center, workers):
        with Pool(center.address, secret="s", tls=pki["good"]) as pool:
            data = pool.scatter(arrays * 3)
            back = pool.gather(data)
            assert [len(a) for a in back] == sizes * 3
            assert all((a == b).all() for a, b in zip(arrays * 3, back))
            copied = pool.gather(pool.map(np.copy, data))  # some fetched worker to worker
            assert all((a == b).all() for a, b in zip(arrays * 3, copied))


@gen_test(timeout=30)
async def test_tls_mismatches_fail_clearly(pki):
    good, evil = pki["good"], pki["evil"]
    async with cluster(1, tls=good) as (center, _):
        # a certificate from another CA is refused by the server (mutual TLS)
        with pytest.raises(ConnectionBrokenError, match="TLS handshake with 127.0.0.1"):
            await connect(center.address, tls=TLS(cert=evil.cert, key=evil.key, ca=good.ca))
        # no client certificate at all is refused too
        with pytest.raises(ConnectionBrokenError):
            comm = await connect(center.address, tls=TLS(ca=good.ca), timeout=2)
            await comm.read()
        # a server whose certificate our CA did not sign is refused by us
        with pytest.raises(ConnectionBrokenError, match="certificate verify failed"):
            await connect(center.address, tls=evil)
        # plain TCP to a TLS server: a clear timeout with a hint, not a hang
        with pytest.raises(TimeoutError, match="does it require TLS"):
            await connect(center.address, timeout=0.5)
        # the server is still fine for honest peers
        comm = await connect(center.address, tls=good)
        await comm.write({"op": "ncores"})
        assert len((await comm.read())["result"]) == 1
        comm.close()
    async with cluster(0) as (plain_center, _):
        with pytest.raises(ConnectionBrokenError, match="TLS handshake"):
            await connect(plain_center.address, tls=good, timeout=2)


def test_tls_through_the_executables(pki, tmp_path):
    tls = pki["good"]
    flags = ["--tls-cert", tls.cert, "--tls-key", tls.key, "--tls-ca", tls.ca]
    secret = tmp_path / "secret"
    with Proc([os.path.join(BIN, "dcenter"), "--port", "0", "--new-secret", str(secret),
               *flags]) as center:  # fmt: skip
        address = center.wait_for_line(r"Started center at (\S+)").group(1)
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
        # the instructions name the real address, ready to paste
        center.wait_for_line(rf"dworker {re.escape(address)} --secret-file {secret}")
        with Proc([os.path.join(BIN, "dworker"), address, "--secret-file", str(secret),
                   *flags]) as worker:  # fmt: skip
            worker.wait_for_line("Register with center")
            key = secret.read_text().strip()
            with Pool(address, secret=key, tls=tls) as pool:
                assert pool.apply(lambda: "over TLS").get() == "over TLS"
            # no TLS: our 1 s handshake time-out ends before the center gives up (10 s)
            with pytest.raises(TimeoutError, match="does it require TLS"):
                Pool(address, secret=key, timeout=1)
        center.wait_for_line(r"refused a connection from")


def test_new_secret_refuses_to_overwrite(tmp_path):
    existing = tmp_path / "secret"
    existing.write_text("keep me")
    with Proc([os.path.join(BIN, "dcenter"), "--port", "0", "--new-secret", str(existing)]) as p:
        assert p.wait() != 0
        assert "cannot create secret file" in p.output
    assert existing.read_text() == "keep me"


# -- slow and greedy peers ----------------------------------------------------------


def _raw(address, source="127.0.0.1"):
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(address)
    return sock


@gen_test(timeout=30)
async def test_slow_loris_is_dropped_and_others_are_served():
    server = Server({"ping": lambda comm: "pong"}, secret="s",
                    limits=Limits(handshake_timeout=2.0))  # fmt: skip
    await server.start(port=0)
    loop = asyncio.get_running_loop()
    slow = [await loop.run_in_executor(None, _raw, server.address) for _ in range(20)]
    try:
        for sock in slow:  # each sends half a hello, then stalls
            sock.sendall(MAGIC)

        def greeted():  # the server took each one in: it waits for the rest of its hello
            for sock in slow:
                sock.settimeout(5)
                assert len(sock.recv(_SERVER_HELLO.size, socket.MSG_WAITALL)) == _SERVER_HELLO.size
            return True

        assert await loop.run_in_executor(None, greeted)
        async with rpc(server.address, secret="s") as r:
            assert await r.ping() == "pong"

        def still_waiting(sock):  # no EOF yet: the server has not given up on it
            sock.setblocking(False)
            try:
                return sock.recv(1) != b""
            except BlockingIOError:
                return True

        # served at once, while every staller still held its place, not after them
        assert all(still_waiting(sock) for sock in slow)

        def all_dropped():
            for sock in slow:
                sock.settimeout(5)
                data = sock.recv(1 << 16)
                while data:  # EOF when the server gives up
                    data = sock.recv(1 << 16)
            return True

        assert await loop.run_in_executor(None, all_dropped)
        assert not server.admission.handshaking and not server.admission.open
    finally:
        for sock in slow:
            sock.close()
        await server.close()


@gen_test(timeout=30)
async def test_authenticated_connections_are_capped_per_peer():
    server = Server({"ping": lambda comm: "pong"}, limits=Limits(max_connections_per_peer=5))
    await server.start(port=0)
    comms = []
    try:
        comms = [await connect(server.address) for _ in range(5)]
        assert server.admission.open["127.0.0.1"] == 5
        with pytest.raises(ConnectionBrokenError):  # the sixth is refused
            extra = await connect(server.address, timeout=2)
            await extra.write({"op": "ping"})
            await extra.read()
        comms.pop().close()  # one leaves: room again
        await wait_for(lambda: server.admission.open["127.0.0.1"] == 4, 5, "never left")
        async with rpc(server.address) as r:
            assert await r.ping() == "pong"
    finally:
        for comm in comms:
            comm.close()
        await server.close()


@gen_test(timeout=30)
async def test_silent_connections_from_a_host_do_not_lock_out_its_honest_clients():
    """At the cap of connections in their handshake, the oldest is closed, not the
    newcomer: an honest client from the flooding host still gets in, at once."""
    server = Server({"ping": lambda comm: "pong"}, secret="s",
                    limits=Limits(max_connections_per_peer=5, max_handshaking_per_peer=4))
    await server.start(port=0)
    loop = asyncio.get_running_loop()
    silent = []
    try:
        for _ in range(10):
            silent.append(await loop.run_in_executor(None, _raw, server.address))

        def closed_by_server(sock):
            sock.settimeout(5)
            data = sock.recv(1 << 16)
            while data:  # the hello, then EOF if the server dropped it
                data = sock.recv(1 << 16)
            return True

        # the six oldest were closed to make room; four wait in their handshake
        assert await loop.run_in_executor(None, lambda: all(map(closed_by_server, silent[:6])))
        assert len(server.admission.handshaking["127.0.0.1"]) == 4
        async with rpc(server.address, secret="s") as r:
            assert await r.ping() == "pong"
    finally:
        for sock in silent:
            sock.close()
        await server.close()


# -- fuzzing ------------------------------------------------------------------------

SAFE_OPS = ["identity", "register", "unregister", "add_keys", "remove_keys", "who_has",
            "has_what", "ncores", "nbytes", "workers", "heartbeat", "subscribe", "ownership",
            "compute", "get_data", "update_data", "delete_data", "keys", "info",
            "no_such_op"]  # fmt: skip  -- every op but terminate, which a secret holder may use

# addresses in fuzzed messages: loopback ports nothing listens on, so that a worker told
# to fetch from one is refused at once and no unrelated local service is ever dialled
loopback = st.sampled_from([("127.0.0.1", 1), ("127.0.0.1", 9), "127.0.0.1:1"])
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                   st.binary(max_size=40), loopback)  # fmt: skip
values = st.recursive(leaves, lambda c: st.one_of(st.lists(c, max_size=4),
                      st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=12)  # fmt: skip
kwargs_names = st.sampled_from(["address", "keys", "ncores", "nbytes", "data", "key",
                                "args", "kwargs", "who_has", "workers", "seed", "owner",
                                "owners", "own", "release", "x"])  # fmt: skip
# a secret holder may run any code by design, so fuzzing random pickled *functions* says
# nothing about robustness; functions are harmless ones, or garbage that is not a pickle
functions = st.sampled_from([dumps_function(len), dumps_function(repr), b"not a pickle", None])
messages = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(SAFE_OPS)},
                          optional={"reply": st.booleans(), "function": functions}).flatmap(
        lambda m: st.dictionaries(kwargs_names, values, max_size=4).map(lambda kw: {**kw, **m})),
    values,
)  # fmt: skip


def _frame(frames):
    lengths = [len(f) for f in frames]
    return struct.pack(f"<Q{len(frames)}Q", len(frames), *lengths) + b"".join(map(bytes, frames))


class Target:
    """A live center with two workers, kept for the whole fuzz run."""

    def __init__(self):
        self.cm = cluster_in_thread(2, secret="fuzz")
        self.center, self.workers = self.cm.__enter__()
        self.servers = [self.center.address] + [w.address for w in self.workers]

    def honest_pool_works(self):
        with Pool(self.center.address, secret="fuzz") as pool:
            pool.wait_for_workers(2, timeout=10)
            A = pool.map(lambda x: x * 2, range(20))
            assert pool.apply(sum, [A]).get() == 380


@pytest.fixture(scope="module")
def target():
    t = Target()
    yield t
    t.honest_pool_works()
    t.cm.__exit__(None, None, None)


def _handshake(sock, secret=b"fuzz"):
    import hashlib
    import hmac

    magic, version, mode, nonce_s = _SERVER_HELLO.unpack(sock.recv(_SERVER_HELLO.size))
    nonce_c = os.urandom(32)
    mac = hmac.new(secret, b"distributed3 client" + nonce_s + nonce_c, hashlib.sha256).digest()
    sock.sendall(_CLIENT_HELLO.pack(MAGIC, VERSION, 1, nonce_c, mac))
    status = sock.recv(33)
    assert status[:1] == b"\x00"


@pytest.mark.timeout(240)
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(min_size=1, max_size=200), which=st.integers(0, 2))
def test_fuzz_unauthenticated_bytes(target, data, which):
    sock = _raw(target.servers[which])
    try:
        sock.settimeout(5)
        sock.recv(_SERVER_HELLO.size)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        assert len(reply) <= 33  # at most a status byte and a MAC: nothing was unpickled
    finally:
        sock.close()


@pytest.mark.timeout(240)
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(msgs=st.lists(messages, min_size=1, max_size=5), which=st.integers(0, 2),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3))  # fmt: skip
def test_fuzz_authenticated_messages(target, msgs, which, flips):
    sock = _raw(target.servers[which])
    try:
        sock.settimeout(10)
        _handshake(sock)
        wire = bytearray(b"".join(_frame(dumps(m)) for m in msgs))
        for pos, byte in flips:  # mutate the framed bytes: lengths, opcodes, anything
            wire[pos % len(wire)] = byte
        sock.sendall(wire)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(1 << 16):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server may close on a bad frame header: that is a correct answer
    except TimeoutError:
        # still busy with this connection (say, a task queued behind others): fine, as
        # long as the server itself answers everyone else
        async def alive():
            async with rpc(target.servers[which], secret="fuzz", timeout=10) as r:
                return (await r.identity())["type"]

        assert asyncio.run(alive()) in ("Center", "Worker")
    finally:
        sock.close()


def test_after_fuzzing_the_servers_still_serve(target):
    target.honest_pool_works()
    for address in target.servers:
        with pytest.raises(AuthenticationError):
            asyncio.run(connect(address, secret="wrong"))


@gen_test(timeout=30)
async def test_no_client_certificate_against_mutual_tls_is_a_clear_error_on_every_path(pki):
    """Under TLS 1.3 the server's refusal comes with its first bytes, after our side of
    the handshake has finished: it must still be a ConnectionBrokenError naming TLS."""
    good = pki["good"]
    bare = TLS(ca=good.ca)
    with cluster_in_thread(1, tls=good) as (center, _):  # its own loop, as a real server
        for attempt in range(3):  # the alert may land in the handshake or in a read
            with pytest.raises(ConnectionBrokenError, match="TLS"):
                async with rpc(center.address, tls=bare) as r:
                    await r.identity()
            with pytest.raises(ConnectionBrokenError, match="TLS"):
                comm = await connect(center.address, tls=bare, timeout=2)
                await comm.write({"op": "identity"})
                await comm.read()


SERVE_WITH_FEW_DESCRIPTORS = """
import asyncio, logging, resource, sys
logging.basicConfig(level=logging.WARNING)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
from distributed3.core.server import Server
async def main():
    server = await Server({"ping": lambda comm: "pong"}, secret="s").start(port=0)
    print(f"{server.address[0]}:{server.address[1]}", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@pytest.mark.timeout(60)
def test_out_of_descriptors_the_server_pauses_logs_once_and_serves_honest_clients():
    """240 silent sockets from four hosts against a server that may open 128 files."""
    import sys
    import time

    import psutil

    from distributed3.utils import parse_address, wait_for_sync

    with Proc([sys.executable, "-c", SERVE_WITH_FEW_DESCRIPTORS, "128"]) as server:
        address = parse_address(server.wait_for_line(r"(\S+:\d+)").group(1))
        silent = []
        try:
            for host in range(2, 6):
                silent += [_raw(address, f"127.0.0.{host}") for _ in range(60)]
            wait_for_sync(lambda: "out of file descriptors" in server.output
                          or "Too many open files" in server.output, 10,
                          "the server never ran out of descriptors")  # fmt: skip
            cpu = psutil.Process(server.proc.pid)
            before, start = sum(cpu.cpu_times()[:2]), time.monotonic()
            done = {}

            def honest():
                async def ping():
                    async with rpc(address, secret="s", timeout=10) as r:
                        return await r.ping()
                done["reply"] = asyncio.run(ping())

            honest()
            assert done["reply"] == "pong"
            # a window of 2 s under the flood (a measurement, not a wait for an event)
            wait_for_sync(lambda: time.monotonic() - start >= 2, 5, "the clock stopped")
            spent = sum(cpu.cpu_times()[:2]) - before
            assert spent < 0.5, f"the server spun: {spent:.2f} CPU seconds in 2 s"
            assert server.output.count("out of file descriptors") <= 3
            assert "Traceback" not in server.output
        finally:
            for sock in silent:
                sock.close()
