"""Creating partial scans from signals: to_partial_scan, as_partial_scan, from_scan_positions."""

import dask.array as da
import numpy as np
import pytest
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
from hyperspy_partialscan.paths import generate_path
from hyperspy_partialscan.signals import LazyPartialScan2D, PartialScan2D

LAZY = [False, True]
NAV_SHAPES = [(), (3,), (2, 3)]
FRAME = 64


def _cls(lazy):
    return LazyPartialScan2D if lazy else PartialScan2D


# ------------------------------------------------------------------ to_partial_scan


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("nav_shape", NAV_SHAPES)
def test_to_partial_scan_basics(lazy, nav_shape):
    s = make_signal(nav_shape, lazy, FRAME)
    snap = snapshot(s)
    p = hp.to_partial_scan(s, "spiral", 0.1, seed=11)
    assert_unchanged(s, snap)
    assert type(p) is _cls(lazy)
    assert p.data.dtype == np.float32
    assert p.data.shape == s.data.shape
    assert p._lazy is lazy
    # NaN semantics (clean): the frame's own values where sampled, NaN elsewhere; one shared path
    data, truth = array_of(p), snap["data"]
    mask = generate_path("spiral", (FRAME, FRAME), 0.1, 11).mask
    np.testing.assert_array_equal(np.isfinite(data), np.broadcast_to(mask, data.shape))
    np.testing.assert_array_equal(data[np.isfinite(data)], truth[np.isfinite(data)])
    # axes, metadata and original_metadata preserved
    assert axes_summary(p) == axes_summary(s)
    assert_tree_equal(metadata_without_partial_scan(p), metadata_without_partial_scan(s))
    assert p.metadata.General.title == f"{s.metadata.General.title} (10 % spiral)"  # says it is a partial scan
    assert_tree_equal(p.original_metadata, s.original_metadata)
    assert p.metadata.Signal.signal_type == "partial_scan"
    # the simulation record
    md = p.metadata.Signal.Partial_scan
    assert md.path == "spiral"
    assert md.coverage_requested == 0.1
    assert md.coverage_path == pytest.approx(mask.mean())
    if lazy:  # the actual coverage is signal.coverage; not computed for the record
        assert not md.has_item("coverage_measured")
    elif nav_shape:
        assert md.coverage_measured == pytest.approx([mask.mean()] * int(np.prod(nav_shape)))
    else:
        assert md.coverage_measured == pytest.approx(mask.mean())
    assert md.seed == 11
    assert md.vary_per_frame is False
    assert md.source == "simulated"
    assert md.package_version == hp.__version__
    assert list(md.frame_shape) == [FRAME, FRAME]
    assert md.path_options.as_dictionary() == {}
    assert md.noise.as_dictionary() == hp.NoiseModel().as_dict()
    assert md.path_parameters.gap > 0


@pytest.mark.parametrize("lazy", LAZY)
def test_noise_properties(lazy):
    """The detector's variance model is kept (not a stale data-sized variance), unless noise is simulated."""
    s = make_signal((2,), False, 32)
    s.estimate_poissonian_noise_variance()  # adds a data-sized Noise_properties.variance
    s = s.as_lazy() if lazy else s
    model = s.metadata.Signal.Noise_properties.Variance_linear_model.as_dictionary()
    snap = snapshot(s)
    for out in (hp.to_partial_scan(s, "spiral", 0.2, seed=0), hp.as_partial_scan(s, unscanned_value=0)):
        assert out.metadata.Signal.Noise_properties.Variance_linear_model.as_dictionary() == model
        assert not out.metadata.has_item("Signal.Noise_properties.variance")
    noisy = hp.to_partial_scan(s, "spiral", 0.2, seed=0, noise={"dose": 100.0})
    assert not noisy.metadata.has_item("Signal.Noise_properties")
    assert_unchanged(s, snap)
    assert s.metadata.has_item("Signal.Noise_properties.variance")


def test_to_partial_scan_records_options_and_noise():
    s = make_signal((2,), False, FRAME)
    noise = {"dose": 50.0, "detector_sigma": 0.01, "drift": (0.5, -0.5)}
    p = hp.to_partial_scan(s, "lines", 0.25, seed=3, noise=noise, direction="columns")
    md = p.metadata.Signal.Partial_scan
    assert md.path_options.as_dictionary() == {"direction": "columns"}
    assert md.noise.as_dictionary() == hp.NoiseModel(**noise).as_dict()
    assert md.path_parameters.direction == "columns"
    data = p.data
    # column lines: every sampled column is fully sampled
    cols = np.isfinite(data[0]).all(axis=0)
    np.testing.assert_array_equal(np.isfinite(data[0]), np.broadcast_to(cols, data[0].shape))


@pytest.mark.parametrize("lazy", LAZY)
def test_vary_per_frame(lazy):
    s = make_signal((2, 3), lazy, FRAME)
    varied = array_of(hp.to_partial_scan(s, "random", 0.1, seed=5, vary_per_frame=True))
    masks = np.isfinite(varied).reshape(6, FRAME, FRAME)
    for i in range(6):
        for j in range(i + 1, 6):
            assert not np.array_equal(masks[i], masks[j])
    assert all(m.mean() == pytest.approx(0.1, rel=0.05) for m in masks)
    shared = np.isfinite(array_of(hp.to_partial_scan(s, "random", 0.1, seed=5, vary_per_frame=False)))
    shared = shared.reshape(6, FRAME, FRAME)
    assert all(np.array_equal(shared[0], m) for m in shared)


def test_lazy_nonlazy_and_batch_size_identical():
    """Chunking and laziness never change the result (noise and per-frame paths included)."""
    kwargs = dict(seed=21, vary_per_frame=True, noise={"dose": 30.0, "detector_sigma": 0.02, "line_jitter": 0.3})
    s = make_signal((2, 3), False, FRAME)
    ref = hp.to_partial_scan(s, "jittered_grid", 0.1, navigation_chunks=16, **kwargs).data
    for lazy in LAZY:
        for bs in (1, 2, 5):
            src = s.as_lazy() if lazy else s
            out = array_of(hp.to_partial_scan(src, "jittered_grid", 0.1, navigation_chunks=bs, **kwargs))
            np.testing.assert_array_equal(out, ref)
    lazy_in = s.as_lazy()
    lazy_in.data = lazy_in.data.rechunk((1, 2, FRAME // 2, FRAME))  # odd input chunks, frames split
    np.testing.assert_array_equal(array_of(hp.to_partial_scan(lazy_in, "jittered_grid", 0.1, **kwargs)), ref)


@pytest.mark.parametrize("lazy", LAZY)
def test_seed_none_is_recorded_and_reproduces(lazy):
    s = make_signal((2,), lazy, FRAME)
    noise = {"dose": 10.0}
    p1 = hp.to_partial_scan(s, "spiral", 0.1, noise=noise, vary_per_frame=True)
    seed = p1.metadata.Signal.Partial_scan.seed
    assert isinstance(seed, int) and 0 <= seed < 2**63
    p2 = hp.to_partial_scan(s, "spiral", 0.1, noise=noise, vary_per_frame=True, seed=seed)
    np.testing.assert_array_equal(array_of(p1), array_of(p2))
    p3 = hp.to_partial_scan(s, "spiral", 0.1, noise=noise, vary_per_frame=True)
    assert p3.metadata.Signal.Partial_scan.seed != seed


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("lazy_output", [True, False])
def test_to_partial_scan_lazy_output(lazy, lazy_output):
    s = make_signal((3,), lazy, FRAME)
    p = hp.to_partial_scan(s, "grid", 0.1, seed=1, lazy_output=lazy_output)
    assert type(p) is _cls(lazy_output)
    assert isinstance(p.data, da.Array) is lazy_output
    np.testing.assert_array_equal(array_of(p), hp.to_partial_scan(make_signal((3,), False, FRAME), "grid", 0.1,
                                                                  seed=1).data)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float64, bool])
def test_to_partial_scan_dtypes(dtype):
    s = make_signal((2,), False, 32)
    s.data = (s.data * 1000).astype(dtype) if dtype is not bool else s.data > 0.8
    p = hp.to_partial_scan(s, "random", 0.2, seed=0)
    assert p.data.dtype == np.float32
    fin = np.isfinite(p.data)
    np.testing.assert_array_equal(p.data[fin], s.data[fin].astype(np.float32))


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (("zigzag", 0.1), {}, ValueError, "unknown scan path"),
        (("spiral", 0), {}, ValueError, "coverage"),
        (("spiral", -0.5), {}, ValueError, "coverage"),
        (("spiral", 1.5), {}, ValueError, "coverage"),
        (("spiral", np.nan), {}, ValueError, "coverage"),
        (("spiral", 0.1), {"speed": "warp"}, ValueError, "speed"),
        (("spiral", 0.1), {"wobble": 3}, TypeError, "invalid option"),
        (("spiral", 0.1), {"noise": {"dose": -1}}, ValueError, "dose"),
        (("spiral", 0.1), {"noise": {"shot": 1}}, ValueError, "unknown noise parameter"),
        (("spiral", 0.1), {"seed": -1}, ValueError, "seed"),
        (("spiral", 0.1), {"seed": 2.5}, ValueError, "seed"),
    ],
)
def test_to_partial_scan_errors_leave_input_untouched(lazy, args, kwargs, exc, match):
    s = make_signal((2,), lazy, 32)
    snap = snapshot(s)
    with pytest.raises(exc, match=match):
        hp.to_partial_scan(s, *args, **kwargs)
    assert_unchanged(s, snap)


def test_to_partial_scan_rejects_non_images():
    import hyperspy.api as hs

    with pytest.raises(ValueError, match="2 signal dimensions"):
        hp.to_partial_scan(hs.signals.Signal1D(np.zeros((4, 16))))
    with pytest.raises(TypeError, match="complex"):
        hp.to_partial_scan(hs.signals.Signal2D(np.zeros((16, 16), complex)))
    with pytest.raises(TypeError, match="HyperSpy signal"):
        hp.to_partial_scan(np.zeros((16, 16)))


# ------------------------------------------------------------------ as_partial_scan


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("nav_shape", [(), (2, 3)])
def test_as_partial_scan_zeros(lazy, nav_shape):
    s = make_signal(nav_shape, False, 32)
    s.data[..., ::3, :] = 0
    expected_mask = s.data != 0
    if lazy:
        s = s.as_lazy()
    snap = snapshot(s)
    p = hp.as_partial_scan(s, unscanned_value=0)
    assert_unchanged(s, snap)
    assert type(p) is _cls(lazy)
    data = array_of(p)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(np.isfinite(data), expected_mask)
    np.testing.assert_array_equal(data[expected_mask], snap["data"][expected_mask])
    assert axes_summary(p) == axes_summary(s)
    assert_tree_equal(metadata_without_partial_scan(p), metadata_without_partial_scan(s))
    assert_tree_equal(p.original_metadata, s.original_metadata)
    md = p.metadata.Signal.Partial_scan
    assert md.source == "acquired" and md.unscanned_value == 0
    assert p.coverage == pytest.approx(expected_mask.mean())
    if not lazy:
        assert md.coverage_measured == pytest.approx(expected_mask.mean())


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("lazy_output", [None, True, False])
@pytest.mark.parametrize("mask_kind", ["frame", "full", "frame-dask", "full-dask", "signal", "lazy-signal"])
def test_as_partial_scan_masks(lazy, lazy_output, mask_kind):
    import hyperspy.api as hs

    s = make_signal((2, 3), lazy, 16)
    rng = np.random.default_rng(0)
    full = mask_kind.startswith("full") or mask_kind == "lazy-signal"
    m = rng.random((2, 3, 16, 16) if full else (16, 16)) > 0.6
    mask = {
        "frame": lambda: m,
        "full": lambda: m,
        "frame-dask": lambda: da.from_array(m),
        "full-dask": lambda: da.from_array(m, chunks=(1, 2, 16, 16)),
        "signal": lambda: hs.signals.Signal2D(m),
        "lazy-signal": lambda: hs.signals.Signal2D(m).as_lazy(),
    }[mask_kind]()
    snap = snapshot(s)
    p = hp.as_partial_scan(s, mask=mask, lazy_output=lazy_output)
    assert_unchanged(s, snap)
    expect_lazy = lazy if lazy_output is None else lazy_output
    assert type(p) is _cls(expect_lazy)
    assert isinstance(p.data, da.Array) is expect_lazy
    data = array_of(p)
    np.testing.assert_array_equal(np.isfinite(data), np.broadcast_to(m, data.shape))
    np.testing.assert_array_equal(data[np.isfinite(data)], np.broadcast_to(snap["data"], data.shape)[np.isfinite(data)])
    assert "unscanned_value" not in p.metadata.Signal.Partial_scan


@pytest.mark.parametrize("lazy", LAZY)
def test_as_partial_scan_lazy_to_nonlazy(lazy):
    s = make_signal((3,), True, 16)
    s.data = da.where(da.arange(16)[None, :, None] % 2 == 0, s.data, 0).astype(np.float32)
    p = hp.as_partial_scan(s, unscanned_value=0, lazy_output=False)
    assert type(p) is PartialScan2D and isinstance(p.data, np.ndarray)
    assert p.metadata.Signal.Partial_scan.coverage_measured == pytest.approx(0.5)
    assert s._lazy  # the input stays lazy


@pytest.mark.parametrize("lazy", LAZY)
def test_as_partial_scan_nan_and_none(lazy):
    s = make_signal((), False, 16)
    s.data[0, :4] = np.nan
    s.data[1, :4] = 0
    if lazy:
        s = s.as_lazy()
    p = hp.as_partial_scan(s, unscanned_value=None)
    data = array_of(p)
    assert np.isnan(data[0, :4]).all()
    np.testing.assert_array_equal(data[1, :4], 0)
    assert np.isfinite(data[1:]).all()
    q = hp.as_partial_scan(s, unscanned_value=np.nan)
    np.testing.assert_array_equal(array_of(q), data)


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"mask": np.ones((15, 16), bool)}, ValueError, "mask shape"),
        ({"mask": np.ones((3, 16, 16), bool)}, ValueError, "mask shape"),
        ({"mask": np.ones((16, 16), np.uint8)}, TypeError, "boolean"),
        ({"mask": np.ones((16, 16))}, TypeError, "boolean"),
        ({"unscanned_value": "zero"}, ValueError, "unscanned_value"),
    ],
)
def test_as_partial_scan_errors_leave_input_untouched(lazy, kwargs, exc, match):
    s = make_signal((2,), lazy, 16)
    snap = snapshot(s)
    with pytest.raises(exc, match=match):
        hp.as_partial_scan(s, **kwargs)
    assert_unchanged(s, snap)


# ------------------------------------------------------------------ from_scan_positions


def test_from_scan_positions_averages_repeats():
    pos = [(1, 1), (1.2, 0.9), (3, 4), (0.6, 1.4), (7, 7)]
    val = [1.0, 3.0, 5.0, 8.0, 2.0]
    p = hp.from_scan_positions(pos, val, (8, 10), title="custom scan")
    assert type(p) is PartialScan2D
    assert p.data.dtype == np.float32 and p.data.shape == (8, 10)
    assert p.data[1, 1] == pytest.approx(4.0)  # (1 + 3 + 8) / 3
    assert p.data[3, 4] == 5.0 and p.data[7, 7] == 2.0
    assert np.isfinite(p.data).sum() == 3
    md = p.metadata.Signal.Partial_scan
    np.testing.assert_array_equal(md.positions, np.asarray(pos, float))
    assert md.repeated_hits == 1
    assert md.coverage_measured == pytest.approx(3 / 80)
    assert md.source == "scan_positions"
    assert p.metadata.General.title == "custom scan"
    assert p.metadata.Signal.signal_type == "partial_scan"


def test_from_scan_positions_axes_and_metadata():
    axes = [
        {"name": "y", "units": "nm", "scale": 0.5, "offset": 1.0, "size": 8},
        {"name": "x", "units": "nm", "scale": 0.25, "offset": -1.0, "size": 10},
    ]
    p = hp.from_scan_positions([(0, 0)], [1.0], (8, 10), axes=axes, metadata={"General": {"authors": "me"}})
    sy, sx = p.axes_manager.signal_axes[::-1]
    assert (sy.name, sy.scale, sy.offset, sy.size) == ("y", 0.5, 1.0, 8)
    assert (sx.name, sx.scale, sx.offset, sx.size) == ("x", 0.25, -1.0, 10)
    assert p.metadata.General.authors == "me"
    with pytest.raises(ValueError, match="two axis dictionaries"):
        hp.from_scan_positions([(0, 0)], [1.0], (8, 10), axes=axes[:1])


@pytest.mark.parametrize(
    "pos, val, match",
    [
        ([(0, 0), (8, 0)], [1, 2], "outside the 8x10 field"),
        ([(0, 0), (-0.6, 0)], [1, 2], "outside"),
        ([(0, 10.4)], [1], "outside"),
        ([(0, 0), (1, 1)], [1], "intensities must have shape"),
        ([(0, 0, 0)], [1], r"positions must have shape \(N, 2\)"),
        ([(0, np.nan)], [1], "finite"),
        ([(0, 0)], [np.inf], "finite"),
        (np.zeros((0, 2)), [], "no probe positions"),
    ],
)
def test_from_scan_positions_errors(pos, val, match):
    with pytest.raises(ValueError, match=match):
        hp.from_scan_positions(pos, val, (8, 10))


def test_from_scan_positions_rejects_complex():
    with pytest.raises(TypeError, match="real"):
        hp.from_scan_positions([(0, 0)], [1 + 1j], (8, 10))


# ------------------------------------------------------------------ input problems (reliability issue)


@pytest.mark.parametrize("lazy", LAZY)
def test_to_partial_scan_masks_non_finite_input(lazy):
    s = make_signal((2,), False, 32)
    s.data[0, :5, :] = np.nan  # 160 NaN
    s.data[1, 0, :3] = np.inf  # 3 inf
    s = s.as_lazy() if lazy else s
    snap = snapshot(s)
    if lazy:  # not read in advance: no count, masked all the same
        p = hp.to_partial_scan(s, "random", 0.5, seed=0)
    else:
        with pytest.warns(UserWarning, match="163 non-finite input pixel"):
            p = hp.to_partial_scan(s, "random", 0.5, seed=0)
    assert_unchanged(s, snap)
    data = array_of(p)
    assert np.isnan(data[0, :5]).all() and np.isnan(data[1, 0, :3]).all()
    assert not np.isinf(data).any()
    actual = np.isfinite(data).reshape(2, -1).mean(axis=1)
    md = p.metadata.Signal.Partial_scan
    if lazy:
        assert p.coverage == pytest.approx(actual.mean())
    else:
        assert md.coverage_measured == pytest.approx(list(actual))
        assert md.coverage_measured[0] < md.coverage_path


@pytest.mark.parametrize("noise", [None, {"dose": 50.0}])
def test_to_partial_scan_all_nan_frame_is_an_error(noise):
    s = make_signal((2,), False, 32)
    s.data[1] = np.nan
    snap = snapshot(s)
    with pytest.raises(ValueError, match="1 frame\\(s\\) have no finite pixel .* index 1"):
        hp.to_partial_scan(s, "spiral", 0.1, seed=0, noise=noise)
    assert_unchanged(s, snap)


def test_to_partial_scan_warns_on_unreachable_coverage():
    s = make_signal((), False, 64)
    with pytest.warns(UserWarning, match="coverage 1e-05 was requested but the 'spiral' path"):
        p = hp.to_partial_scan(s, "spiral", 1e-5, seed=0)
    md = p.metadata.Signal.Partial_scan
    assert md.coverage_requested == 1e-5 and md.coverage_measured == pytest.approx(md.coverage_path)


@pytest.mark.parametrize("func", ["to_partial_scan", "as_partial_scan"])
def test_large_integers_warn(func):
    s = make_signal((), False, 16, dtype=np.uint32)
    s.data[:] = 2**24 + 1
    s.data[0, 0] = 0
    snap = snapshot(s)
    with pytest.warns(UserWarning, match="255 integer value\\(s\\) above 2\\*\\*24"):
        if func == "to_partial_scan":
            hp.to_partial_scan(s, "random", 0.5, seed=0)
        else:
            hp.as_partial_scan(s, unscanned_value=0)
    assert_unchanged(s, snap)


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("func", ["to_partial_scan", "as_partial_scan"])
def test_empty_navigation_is_an_error(lazy, func):
    import hyperspy.api as hs

    zeros = da.zeros((0, 8, 8), np.float32) if lazy else np.zeros((0, 8, 8), np.float32)
    s = (hs.signals.Signal2D if not lazy else hs.signals.Signal2D(np.zeros((1, 1))).as_lazy().__class__)(zeros)
    with pytest.raises(ValueError, match="has no frames \\(navigation size 0\\)"):
        getattr(hp, func)(s, unscanned_value=0) if func == "as_partial_scan" else hp.to_partial_scan(s)


@pytest.mark.parametrize("lazy", LAZY)
def test_as_partial_scan_needs_mask_or_value(lazy):
    s = make_signal((2,), lazy, 16)
    snap = snapshot(s)
    with pytest.raises(ValueError, match="give mask= .* or unscanned_value="):
        hp.as_partial_scan(s)
    assert_unchanged(s, snap)


@pytest.mark.parametrize("lazy", LAZY)
def test_as_partial_scan_mask_wins_over_value(lazy):
    s = make_signal((), False, 16)
    mask = np.ones((16, 16), bool)
    mask[:, :4] = False
    s.data[5, 5:9] = 0  # 4 real zero counts at scanned pixels
    s = s.as_lazy() if lazy else s
    snap = snapshot(s)
    if lazy:  # not counted for lazy data
        p = hp.as_partial_scan(s, mask=mask, unscanned_value=0)
    else:
        with pytest.warns(UserWarning, match="4 pixel\\(s\\) that the mask marks as scanned hold unscanned_value=0"):
            p = hp.as_partial_scan(s, mask=mask, unscanned_value=0)
    assert_unchanged(s, snap)
    data = array_of(p)
    np.testing.assert_array_equal(data[5, 5:9], 0)
    np.testing.assert_array_equal(np.isfinite(data), mask)
    assert p.metadata.Signal.Partial_scan.unscanned_marked_by == "mask"
