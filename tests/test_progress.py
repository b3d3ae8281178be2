"""Progress bars of ``map(..., progress=True)``: tqdm's, or a plain line without it."""
import pytest


def test_progress_bar_with_tqdm(pool, capsys):
    pytest.importorskip("tqdm")
    pool.map(lambda x: x, range(10), progress=True)
    err = capsys.readouterr().err
    assert "10/10" in err and "lambda" in err and "task/s" in err  # tqdm's own format


def test_progress_bar_without_tqdm(pool, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert sorted(pool.imap_unordered(abs, range(-5, 5), progress=True)) == sorted(
        abs(x) for x in range(-5, 5)
    )
    err = capsys.readouterr().err
    assert "abs: 10/10 100%" in err and "tasks/s" in err and "ETA" in err


def test_progress_bar_counts_chunked_elements(pool, capsys):
    out = pool.map(abs, range(300), chunksize=100, progress=True)
    assert pool.gather(out) == list(range(300))
    assert "300/300" in capsys.readouterr().err


def test_in_jupyter_without_ipywidgets_the_bar_is_text(monkeypatch):
    """tqdm.auto there warns 'IProgress not found' and draws nothing."""
    import sys
    import warnings

    tqdm = pytest.importorskip("tqdm")
    from distributed3.client.progress import progress_bar

    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # as in a Jupyter kernel
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # without the widgets
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = progress_bar(3, "demo")
        bar.update(3)
        bar.close()
    assert type(bar) is tqdm.tqdm
