"""Fault matrix, Python API: a failed or concurrent call never changes its input and never returns a wrong result.

Each case asserts the outcome (error type and message, or the exact result) and that the input
signal is unchanged afterwards (data, title, metadata).
"""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
from pshelpers import array_of, assert_unchanged, make_signal, snapshot

import hyperspy_partialscan as hp

LAZY = [False, True]


def _partial(lazy, nav=(3,), size=48, coverage=0.15):
    return hp.to_partial_scan(make_signal(nav, lazy, size), "spiral", coverage, seed=0, show_progressbar=False)


def _with_frame(p, index, value):
    """A copy of the partial scan whose frame ``index`` is filled with ``value``."""
    data = np.array(array_of(p))
    data[index] = value
    out = p._deepcopy_with_new_data(da.from_array(data, chunks=(1,) + data.shape[1:]) if p._lazy else data)
    return out


@pytest.mark.parametrize("method", ["linear", "nearest", "generator"])
@pytest.mark.parametrize("bad", [np.nan, 1.0], ids=["no_sample", "nothing_to_complete"])
def test_failed_lazy_inplace_leaves_the_signal_as_it_was(method, bad):
    p = _with_frame(_partial(True), 1, bad)
    snap = snapshot(p)
    name = p.data.name
    message = "no sampled pixel" if np.isnan(bad) else "nothing to complete"
    with pytest.raises(ValueError, match=message):
        hp.complete_partial_scan(p, method, inplace=True, show_progressbar=False)
    assert p.data.name == name
    assert_unchanged(p, snap)
    assert not p.metadata.has_item("Signal.Partial_scan.Completion")


def _concurrently(calls, n=16):
    """Run the zero-argument ``calls`` round-robin in ``n`` threads; (results, errors)."""
    results, errors = [], []

    def work(k):
        try:
            results.append((k % len(calls), array_of(calls[k % len(calls)]())))
        except Exception as err:  # noqa: BLE001 - every failure is a finding
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


@pytest.mark.parametrize("lazy", LAZY)
def test_concurrent_calls_on_one_partial_scan_match_sequential_ones(lazy):
    p = _partial(lazy, nav=(4,))
    snap = snapshot(p)
    calls = [lambda: hp.complete_partial_scan(p, "linear", show_progressbar=False),
             lambda: hp.complete_partial_scan(p, "nearest", keep_measured=False, show_progressbar=False),
             lambda: p.scan_mask]
    reference = [array_of(c()) for c in calls]
    results, errors = _concurrently(calls)
    assert errors == [] and len(results) == 16
    for k, out in results:
        np.testing.assert_array_equal(out, reference[k])
    assert_unchanged(p, snap)


@pytest.mark.parametrize("lazy", LAZY)
def test_concurrent_simulations_of_one_signal_match_sequential_ones(lazy):
    s = make_signal((3,), lazy, 48)
    snap = snapshot(s)
    calls = [lambda: hp.to_partial_scan(s, "random", 0.2, seed=3, show_progressbar=False),
             lambda: hp.to_partial_scan(s, "spiral", 0.1, seed=1, vary_per_frame=True, show_progressbar=False),
             lambda: hp.denoise(s, "gaussian", show_progressbar=False)]
    reference = [array_of(c()) for c in calls]
    results, errors = _concurrently(calls)
    assert errors == [] and len(results) == 16
    for k, out in results:
        np.testing.assert_array_equal(out, reference[k])
    assert_unchanged(s, snap)


def test_generator_completes_a_frame_sampled_in_one_corner_only():
    """A tile without samples of its own takes its context from the rest of the frame."""
    frame = np.full((600, 600), np.nan, np.float32)
    rng = np.random.default_rng(0)
    corner = rng.uniform(size=(150, 150)) < 0.2
    frame[:150, :150][corner] = rng.uniform(10, 20, corner.sum())
    s = hp.as_partial_scan(make_signal((), False, 600)._deepcopy_with_new_data(frame))
    out = hp.complete_partial_scan(s, tile_size=256, device="cpu", show_progressbar=False)
    assert np.isfinite(out.data).all()
    assert 5 < float(out.data[400:, 400:].mean()) < 25  # the far tiles continue the sampled intensities


@pytest.mark.parametrize("kwargs,message", [
    ({"precision": "half"}, "precision must be"),
    ({"device": "tpu"}, "unknown device"),
    ({"network_batch_size": 0}, "network_batch_size must be"),
    ({"tile_size": 3}, "tile_size must be"),
])
def test_network_options_are_checked_before_a_lazy_result_is_returned(kwargs, message):
    p = _partial(True)
    snap = snapshot(p)
    with pytest.raises(ValueError, match=message):
        hp.complete_partial_scan(p, lazy_output=True, **kwargs)
    assert_unchanged(p, snap)


@pytest.mark.parametrize("bad", ["a", 0, -3, 2.5])
@pytest.mark.parametrize("call", ["to_partial_scan", "complete_partial_scan", "denoise"])
def test_navigation_chunks_is_checked_up_front(call, bad):
    """Every public function that takes navigation_chunks refuses a non-integer or one below 1, naming it."""
    p = _partial(True)
    signal = make_signal((3,), True, 48)
    snap, snap_p = snapshot(signal), snapshot(p)
    run = {"to_partial_scan": lambda: hp.to_partial_scan(signal, "spiral", 0.2, seed=0, navigation_chunks=bad),
           "complete_partial_scan": lambda: hp.complete_partial_scan(p, "linear", navigation_chunks=bad),
           "denoise": lambda: hp.denoise(signal, "gaussian", navigation_chunks=bad)}[call]
    with pytest.raises(ValueError, match="^navigation_chunks must be an integer >= 1"):
        run()
    assert_unchanged(signal, snap)
    assert_unchanged(p, snap_p)


def test_default_blocks_follow_one_rule():
    """Without navigation_chunks, the frames per block come from the engine's rule, whatever the function."""
    from hyperspy_partialscan.engine import default_navigation_chunks

    signal = make_signal((40,), True, 48)
    partial = hp.to_partial_scan(signal, "spiral", 0.2, seed=0)
    classical = default_navigation_chunks((48, 48))
    assert partial.data.chunks[0][0] == classical == 32
    assert hp.complete_partial_scan(partial, "linear").data.chunks[0][0] == classical
    assert hp.denoise(signal, "gaussian").data.chunks[0][0] == classical
    network = hp.denoise(signal, device="cpu").data.chunks[0][0]
    assert network == default_navigation_chunks((48, 48), 4) == 16


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("task", ["completion", "denoising"])
def test_non_finite_network_output_raises(monkeypatch, lazy, task):
    from hyperspy_partialscan.models import inference

    real = inference.run_network

    def broken(*args, **kwargs):
        out = real(*args, **kwargs)
        out[:, 0, 0] = np.nan
        return out

    monkeypatch.setattr(inference, "run_network", broken)
    if task == "completion":
        s = _partial(lazy)
        call = lambda: hp.complete_partial_scan(s, device="cpu", show_progressbar=False)  # noqa: E731
    else:
        s = make_signal((2,), lazy, 48)
        call = lambda: hp.denoise(s, device="cpu", show_progressbar=False)  # noqa: E731
    snap = snapshot(s)
    with pytest.raises(FloatingPointError, match="non-finite values"):
        out = call()
        array_of(out)  # a lazy result fails when computed
    assert_unchanged(s, snap)


@pytest.mark.parametrize("method", ["linear", "generator"])
def test_repeated_runs_are_identical(method):
    s = make_signal((2,), False, 48)
    a = hp.to_partial_scan(s, "jittered_grid", 0.1, seed=5, show_progressbar=False)
    b = hp.to_partial_scan(s, "jittered_grid", 0.1, seed=5, show_progressbar=False)
    np.testing.assert_array_equal(a.data, b.data)
    kw = {"device": "cpu"} if method == "generator" else {}
    np.testing.assert_array_equal(hp.complete_partial_scan(a, method, show_progressbar=False, **kw).data,
                                  hp.complete_partial_scan(b, method, show_progressbar=False, **kw).data)


@pytest.mark.parametrize("chunks", [(1, 48, 48), (3, 48, 48), (2, 17, 48)])
def test_odd_lazy_chunks_give_the_eager_result(chunks):
    p = _partial(False)
    eager = hp.complete_partial_scan(p, "linear", show_progressbar=False).data
    lazy = p.as_lazy()
    lazy.data = lazy.data.rechunk(chunks)
    np.testing.assert_array_equal(array_of(hp.complete_partial_scan(lazy, "linear", show_progressbar=False)), eager)
