"""Versions checked when a pool meets its cluster: another Python refused, the rest warned."""
import logging

import pytest

import distributed3.worker.center_link as center_link
from distributed3 import Pool, VersionMismatchError
from distributed3.testing import cluster_in_thread, run_in_cluster_loop
from distributed3.utils import wait_for_sync
from distributed3.versions import versions
from distributed3.worker.worker import Worker


def other(**changes):
    return lambda: {**versions(), **changes}


def test_get_versions_names_every_process(pool, workers):
    got = pool.get_versions()
    assert got["client"] == versions() == got["center"]
    assert sorted(got["workers"]) == sorted(w.address for w in workers)


def test_a_worker_on_another_python_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(center_link, "versions", other(python="3.9.18"))
    with cluster_in_thread(1) as (center, (worker,)):
        with pytest.raises(VersionMismatchError) as info:
            Pool(center.address)
    message = str(info.value)
    assert f"runs Python {versions()['python']}" in message and "Python 3.9.18" in message
    assert f"{worker.address[1]}" in message


def test_a_late_worker_on_another_python_is_left_out(center, pool, monkeypatch, caplog):
    monkeypatch.setattr(center_link, "versions", other(python="3.9.18"))
    late = Worker(center.address, ncores=1)
    with caplog.at_level(logging.ERROR, logger="distributed3.client.session"):
        run_in_cluster_loop(late.start(port=0))
        try:
            wait_for_sync(lambda: late.address in pool.session.refused, 5, "the refusal")
            assert late.address not in pool.available_cores
            assert pool.gather(pool.map(abs, range(-20, 0))) == list(range(20, 0, -1))
            assert late.tasks_done == 0
            assert "Python 3.9.18" in caplog.text
        finally:
            run_in_cluster_loop(late.close())


def test_other_package_versions_are_warned_about(monkeypatch, caplog):
    monkeypatch.setattr(center_link, "versions", other(numpy="0.1"))
    with cluster_in_thread(1) as (center, _):
        with caplog.at_level(logging.WARNING, logger="distributed3.client.session"):
            with Pool(center.address) as pool:
                assert pool.apply(abs, (-2,)).get() == 2
    assert "but worker" in caplog.text and "has numpy 0.1" in caplog.text
