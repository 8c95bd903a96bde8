"""Classical completion of partial scans at the signal level."""

import dask.array as da
import hyperspy.api as hs
import numpy as np
import pytest
from hyperspy.signals import LazySignal2D, Signal2D
from pshelpers import (
    array_of,
    assert_tree_equal,
    assert_unchanged,
    axes_summary,
    make_signal,
    metadata_without_partial_scan,
    snapshot,
)

import hyperspy_partialscan as hp
from hyperspy_partialscan.inpainting import BIHARMONIC_MAX_PIXELS

LAZY = [False, True]
CLASSICAL = ["nearest", "linear", "cubic", "biharmonic"]


def _partial(lazy, nav_shape=(2,), size=64, coverage=0.15, path="spiral"):
    return hp.to_partial_scan(make_signal(nav_shape, lazy, size), path, coverage, seed=9)


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("method", CLASSICAL)
@pytest.mark.parametrize("keep_measured", [True, False])
def test_classical_methods(lazy, method, keep_measured):
    p = _partial(lazy)
    snap = snapshot(p)
    c = hp.complete_partial_scan(p, method, keep_measured=keep_measured)
    assert_unchanged(p, snap)
    assert type(c) is (LazySignal2D if lazy else Signal2D)  # a completion is no longer a partial scan
    assert c.data.dtype == np.float32
    out, data = array_of(c), snap["data"]
    assert np.isfinite(out).all()
    sampled = np.isfinite(data)
    if keep_measured:
        np.testing.assert_array_equal(out[sampled], data[sampled])
    else:  # interpolants pass through their samples anyway (up to float rounding)
        np.testing.assert_allclose(out[sampled], data[sampled], rtol=1e-4, atol=1e-4)
    truth = array_of(make_signal((2,), False, 64))
    assert np.sqrt(np.mean((out - truth) ** 2)) < 0.1 * (truth.max() - truth.min())
    assert c.metadata.General.title == f"Completed {p.metadata.General.title}"
    prov = c.metadata.Signal.Partial_scan.Completion
    assert prov.method == method
    assert prov.keep_measured is keep_measured
    assert prov.package_version == hp.__version__
    # the simulation record, axes, metadata and original_metadata survive
    assert_tree_equal(c.metadata.Signal.Partial_scan.path_parameters, p.metadata.Signal.Partial_scan.path_parameters)
    assert c.metadata.Signal.Partial_scan.seed == 9
    assert axes_summary(c) == axes_summary(p)
    assert_tree_equal(metadata_without_partial_scan(c), metadata_without_partial_scan(p))
    assert_tree_equal(c.original_metadata, p.original_metadata)


@pytest.mark.parametrize("lazy", LAZY)
def test_lazy_and_nonlazy_agree(lazy):
    p = _partial(False, nav_shape=(2, 3), size=48)
    ref = hp.complete_partial_scan(p, "linear").data
    src = p.as_lazy() if lazy else p
    for bs in (1, 4):
        np.testing.assert_array_equal(array_of(hp.complete_partial_scan(src, "linear", navigation_chunks=bs)), ref)


def test_linear_beats_nearest_on_smooth_image():
    p = _partial(False, nav_shape=(), size=128, coverage=0.05)
    truth = make_signal((), False, 128).data
    err = {m: np.sqrt(np.mean((hp.complete_partial_scan(p, m).data - truth) ** 2)) for m in ("nearest", "linear")}
    assert err["linear"] < 0.7 * err["nearest"]


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_griddata_fills_match_scipy_and_reuse_the_triangulation(method):
    """linear/cubic equal scipy's griddata (nearest outside the hull); one triangulation per mask."""
    from scipy.interpolate import griddata

    from hyperspy_partialscan import inpainting

    rng = np.random.default_rng(3)
    mask = rng.random((80, 96)) < 0.08
    frames = [np.where(mask, rng.random(mask.shape), np.nan).astype(np.float32) for _ in range(3)]
    inpainting.clear_triangulation_cache()
    fill = inpainting.linear_fill if method == "linear" else inpainting.cubic_fill
    for f in frames:
        got = fill(f)
        ref = griddata(np.argwhere(mask), f[mask], np.argwhere(~mask), method=method)
        expected = inpainting.nearest_fill(f)
        inside = np.isfinite(ref)
        assert 0.5 < inside.mean() < 1  # the test covers pixels inside and outside the hull
        expected[~mask] = np.where(inside, ref, expected[~mask])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[mask], f[mask])
    assert len(inpainting._tri_cache) == 1  # three frames, one path: triangulated once
    fill(np.where(~mask, 1.0, np.nan).astype(np.float32))
    assert len(inpainting._tri_cache) == 2


def test_degenerate_samples_fall_back_to_nearest():
    f = np.full((20, 20), np.nan, np.float32)
    f[5, 2:18] = np.linspace(0, 1, 16)  # all samples on one line: no triangulation exists
    for fill in (hp.inpainting.linear_fill, hp.inpainting.cubic_fill):
        np.testing.assert_array_equal(fill(f), hp.inpainting.nearest_fill(f))


@pytest.mark.parametrize("lazy", LAZY)
def test_inplace(lazy):
    p = _partial(lazy)
    p.metadata.set_item("Signal.Noise_properties.variance", 0.5)  # describes the partial data only
    c = hp.complete_partial_scan(p, "linear")
    expected = array_of(c)
    assert not c.metadata.has_item("Signal.Noise_properties.variance")
    assert c.metadata.Signal.Noise_properties.Variance_linear_model.gain_factor == 2.5
    axes = axes_summary(p)
    title = p.metadata.General.title
    om = p.original_metadata.as_dictionary()
    assert hp.complete_partial_scan(p, "linear", inplace=True) is None
    assert type(p) is (LazySignal2D if lazy else Signal2D)
    assert isinstance(p.data, da.Array) is lazy
    np.testing.assert_array_equal(array_of(p), expected)
    assert p.metadata.General.title == f"Completed {title}"
    assert p.metadata.Signal.Partial_scan.Completion.method == "linear"
    assert not p.metadata.has_item("Signal.Noise_properties.variance")
    assert p.metadata.Signal.Noise_properties.Variance_linear_model.gain_factor == 2.5
    assert axes_summary(p) == axes
    assert_tree_equal(p.original_metadata, om)


def test_inplace_on_plain_signal2d_sets_type():
    s = make_signal((2,), False, 32)
    s.data[:, ::2] = np.nan
    assert hp.complete_partial_scan(s, "nearest", inplace=True) is None
    assert type(s) is Signal2D
    assert np.isfinite(s.data).all()


@pytest.mark.parametrize("lazy", LAZY)
def test_inplace_cannot_change_laziness(lazy):
    p = _partial(lazy)
    snap = snapshot(p)
    with pytest.raises(ValueError, match="inplace=True cannot change laziness"):
        hp.complete_partial_scan(p, "linear", inplace=True, lazy_output=not lazy)
    assert_unchanged(p, snap)


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("lazy_output", [True, False])
def test_lazy_output(lazy, lazy_output):
    p = _partial(lazy)
    c = hp.complete_partial_scan(p, "nearest", lazy_output=lazy_output)
    assert type(c) is (LazySignal2D if lazy_output else Signal2D)
    assert isinstance(c.data, da.Array) is lazy_output
    np.testing.assert_array_equal(array_of(c), hp.complete_partial_scan(_partial(False), "nearest").data)


def _bad_signals(lazy):
    """(signal, exception, message) for inputs that complete_partial_scan must reject."""
    one_d = hs.signals.Signal1D(np.full((3, 16), np.nan, np.float32))
    three_d = hs.signals.BaseSignal(np.zeros((4, 8, 8), np.float32))
    assert three_d.axes_manager.signal_dimension == 3
    cplx = hs.signals.Signal2D(np.full((2, 8, 8), np.nan, np.complex64))
    cases = [(one_d, ValueError, "2 signal dimensions"), (three_d, ValueError, "2 signal dimensions"),
             (cplx, TypeError, "complex")]
    return [(s.as_lazy() if lazy else s, e, m) for s, e, m in cases]


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("case", [0, 1, 2], ids=["Signal1D", "3-signal-dims", "complex"])
def test_rejects_non_images(lazy, case):
    s, exc, match = _bad_signals(lazy)[case]
    snap = snapshot(s)
    with pytest.raises(exc, match=match):
        hp.complete_partial_scan(s, "linear")
    assert_unchanged(s, snap)


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize(
    "method, kwargs, match",
    [
        ("magic", {}, "unknown completion method 'magic'"),
        ("kriging", {}, "choose one of generator, nearest, linear, cubic, biharmonic"),
        ("linear", {"model": "default"}, "only used by method='generator'"),
    ],
)
def test_bad_method(lazy, method, kwargs, match):
    p = _partial(lazy)
    snap = snapshot(p)
    with pytest.raises(ValueError, match=match):
        hp.complete_partial_scan(p, method, **kwargs)
    assert_unchanged(p, snap)


def test_all_nan_frame_nonlazy_fails_early():
    p = _partial(False, nav_shape=(2, 3), size=32)
    p.data[1, 1] = np.nan  # flat navigation index 4
    snap = snapshot(p)
    with pytest.raises(ValueError, match=r"1 frame\(s\) have no sampled pixel.*flat navigation index 4"):
        hp.complete_partial_scan(p, "linear")
    assert_unchanged(p, snap)


def test_all_nan_frame_lazy_fails_at_compute_naming_frame():
    p = _partial(False, nav_shape=(2, 3), size=32)
    p.data[1, 1] = np.nan
    lazy = p.as_lazy()
    snap = snapshot(lazy)
    c = hp.complete_partial_scan(lazy, "linear")  # nothing computed yet
    assert isinstance(c.data, da.Array)
    with pytest.raises(ValueError, match=r"frame 4 \(flat navigation index\) has no sampled pixel"):
        c.compute()
    assert_unchanged(lazy, snap)
    with pytest.raises(ValueError, match="frame 4"):
        hp.complete_partial_scan(lazy, "linear", lazy_output=False)
    assert_unchanged(lazy, snap)


@pytest.mark.parametrize("lazy", LAZY)
def test_biharmonic_frame_limit(lazy):
    side = int(np.sqrt(BIHARMONIC_MAX_PIXELS))
    s = hs.signals.Signal2D(np.full((side + 1, side), np.nan, np.float32))
    s.data[::7, ::7] = 1.0
    s = s.as_lazy() if lazy else s
    snap = snapshot(s)
    with pytest.raises(ValueError, match=r"biharmonic inpainting is limited to \d+ pixels per frame"):
        hp.complete_partial_scan(s, "biharmonic")
    assert_unchanged(s, snap)


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize(
    "path, coverage, match",
    [("spiral", 0, "coverage"), ("spiral", -1, "coverage"), ("spiral", 1.01, "coverage"),
     ("wiggle", 0.1, "unknown scan path 'wiggle'")],
)
def test_pipeline_bad_coverage_or_path(lazy, path, coverage, match):
    s = make_signal((2,), lazy, 32)
    snap = snapshot(s)
    with pytest.raises(ValueError, match=match):
        hp.complete_partial_scan(hp.to_partial_scan(s, path, coverage, seed=0), "linear")
    assert_unchanged(s, snap)


def test_deterministic_task_names():
    p = _partial(True, nav_shape=(2, 3), size=32)
    a = hp.complete_partial_scan(p, "linear")
    b = hp.complete_partial_scan(p, "linear")
    assert a.data.name == b.data.name
    assert hp.complete_partial_scan(p, "nearest").data.name != a.data.name
    assert hp.complete_partial_scan(p, "linear", keep_measured=False).data.name != a.data.name
    assert hp.complete_partial_scan(p, "linear", navigation_chunks=1).data.name != a.data.name
    # the simulation too: same input and seed, same graph
    s = make_signal((2,), True, 32)
    assert hp.to_partial_scan(s, "spiral", 0.1, seed=1).data.name == hp.to_partial_scan(s, "spiral", 0.1,
                                                                                        seed=1).data.name
    assert hp.to_partial_scan(s, "spiral", 0.1, seed=1).data.name != hp.to_partial_scan(s, "spiral", 0.1,
                                                                                        seed=2).data.name
    # and non-lazy input gives deterministic names for lazy output (hash of the data)
    q = _partial(False, nav_shape=(2,), size=32)
    assert (hp.complete_partial_scan(q, "linear", lazy_output=True).data.name
            == hp.complete_partial_scan(q, "linear", lazy_output=True).data.name)


def test_single_blas_thread_limit_is_restored_under_concurrency(monkeypatch):
    """Overlapping uses from several threads (dask blocks): the first one in limits BLAS, the last one out restores.

    (A per-call ``threadpool_limits`` would let a thread save another thread's temporary limit and restore it
    last.) threadpoolctl is replaced by a recorder: the protocol is tested, not OpenBLAS.
    """
    import threading

    from hyperspy_partialscan import inpainting

    events = []

    class FakeLimits:
        def __init__(self, limits, user_api):
            events.append(("limit", limits, user_api))

        def restore_original_limits(self):
            events.append(("restore",))

    class FakeController:
        def limit(self, *, limits, user_api):
            return FakeLimits(limits, user_api)

    monkeypatch.setattr(inpainting, "_blas_controller", FakeController())
    b_in, a_out, b_out = threading.Event(), threading.Event(), threading.Event()

    def b():
        with inpainting._single_blas_thread():
            b_in.set()
            a_out.wait(10)  # A leaves first, while B is still inside
        b_out.set()

    ctx = inpainting._single_blas_thread()
    ctx.__enter__()  # A enters
    assert events == [("limit", 1, "blas")]
    thread = threading.Thread(target=b)
    thread.start()
    assert b_in.wait(10)
    assert events == [("limit", 1, "blas")]  # B does not save the temporary limit as its "original"
    ctx.__exit__(None, None, None)  # A leaves
    assert events == [("limit", 1, "blas")]  # B is still inside: still limited
    a_out.set()
    assert b_out.wait(10)
    thread.join(10)
    assert events == [("limit", 1, "blas"), ("restore",)]  # the last one out restores
    # and again from scratch, with an exception inside
    with pytest.raises(RuntimeError):
        with inpainting._single_blas_thread():
            raise RuntimeError
    assert events[2:] == [("limit", 1, "blas"), ("restore",)]
    assert inpainting._blas_users == 0


# ------------------------------------------------------------------ input problems (reliability and trust issues)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("keep_measured", [True, False])
def test_measured_rms_deviation_recorded(lazy, keep_measured):
    from pshelpers import assert_unchanged, make_signal, snapshot

    import hyperspy_partialscan as hp

    s = hp.to_partial_scan(make_signal((2,), lazy, 32), "random", 0.3, seed=0)
    snap = snapshot(s)
    out = hp.complete_partial_scan(s, "nearest", keep_measured=keep_measured, show_progressbar=False,
                                   lazy_output=lazy)
    assert_unchanged(s, snap)
    c = out.metadata.Signal.Partial_scan.Completion
    if lazy:
        assert c.measured_rms_deviation == "not computed (lazy output)"
        assert c.measured_rms_deviation_over_noise == "not computed (lazy output)"
    else:
        assert c.measured_rms_deviation == pytest.approx(0.0, abs=1e-6)
        assert c.measured_rms_deviation_over_noise == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("func", ["complete_partial_scan", "denoise"])
def test_empty_navigation_is_an_error_everywhere(lazy, func):
    import dask.array as da
    import hyperspy.api as hs

    import hyperspy_partialscan as hp

    zeros = da.zeros((0, 8, 8), np.float32) if lazy else np.zeros((0, 8, 8), np.float32)
    cls = hs.signals.Signal2D(np.zeros((1, 1))).as_lazy().__class__ if lazy else hs.signals.Signal2D
    for method in ("linear", "generator") if func == "complete_partial_scan" else ("gaussian", "generator"):
        with pytest.raises(ValueError, match="has no frames \\(navigation size 0\\)"):
            getattr(hp, func)(cls(zeros), method)
    if func == "denoise":
        with pytest.raises(ValueError, match="has no frames \\(navigation size 0\\)"):
            hp.fit_denoiser(cls(zeros))
