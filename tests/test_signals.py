"""The partial_scan signal classes: scan_mask, coverage, methods, saving, plotting the scan path."""

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
    snapshot,
)

import hyperspy_partialscan as hp
from hyperspy_partialscan.plotting import scan_path_of
from hyperspy_partialscan.signals import LazyPartialScan2D, PartialScan2D

LAZY = [False, True]


def _partial(lazy, nav_shape=(2, 3), size=48, **kwargs):
    kwargs.setdefault("seed", 4)
    return hp.to_partial_scan(make_signal(nav_shape, lazy, size), "spiral", 0.15, **kwargs)


@pytest.mark.parametrize("lazy", LAZY)
def test_scan_mask_and_coverage(lazy):
    p = _partial(lazy, vary_per_frame=True)
    snap = snapshot(p)
    m = p.scan_mask
    assert m.data.dtype == bool
    assert m._lazy is lazy
    assert isinstance(m.data, da.Array) is lazy
    assert not isinstance(m, PartialScan2D)
    assert m.axes_manager.signal_dimension == 2
    assert axes_summary(m) == axes_summary(p)
    assert m.metadata.General.title.startswith("Scan mask of")
    data = array_of(p)
    np.testing.assert_array_equal(array_of(m), np.isfinite(data))
    cov = p.coverage
    assert isinstance(cov, float)
    assert cov == pytest.approx(np.isfinite(data).mean())
    assert 0.1 < cov < 0.2
    assert_unchanged(p, snap)


@pytest.mark.parametrize("lazy", LAZY)
def test_signal_methods(lazy):
    s = make_signal((2,), lazy, 48)
    s.set_signal_type("partial_scan")
    assert type(s) is (LazyPartialScan2D if lazy else PartialScan2D)
    p = s.to_partial_scan("random", 0.2, seed=1)
    np.testing.assert_array_equal(array_of(p), array_of(hp.to_partial_scan(s, "random", 0.2, seed=1)))
    c = p.complete_partial_scan("nearest")
    np.testing.assert_array_equal(array_of(c), array_of(hp.complete_partial_scan(p, "nearest")))
    assert type(c) is (LazySignal2D if lazy else Signal2D)  # a completion is an ordinary image


@pytest.mark.parametrize("lazy", LAZY)
def test_slicing_keeps_class_and_nan(lazy):
    p = _partial(lazy)
    q = p.inav[1, 0]
    assert isinstance(q, PartialScan2D) and q._lazy is lazy
    np.testing.assert_array_equal(array_of(q), array_of(p)[0, 1])


# ------------------------------------------------------------------ saving


def _completed(lazy):
    return hp.complete_partial_scan(_partial(lazy, nav_shape=(2,)), "linear")


def _varied(lazy):
    p = _partial(lazy, vary_per_frame=True, noise={"dose": 50.0})
    p.axes_manager.indices = (2, 1)  # the path of frame 5 is regenerated from the loaded seed
    return p


def _from_positions(lazy):
    rng = np.random.default_rng(0)
    p = hp.from_scan_positions(rng.uniform(0, 31, (300, 2)), rng.random(300), (32, 32), title="positions")
    return p.as_lazy() if lazy else p


@pytest.mark.parametrize("ext", ["hspy", "zspy"])
@pytest.mark.parametrize("lazy_load", LAZY)
@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize(
    "make", [_partial, _varied, _completed, _from_positions], ids=["simulated", "varied", "completed", "positions"]
)
def test_save_round_trip(tmp_path, ext, lazy, lazy_load, make):
    sig = make(lazy)
    fname = tmp_path / f"scan.{ext}"
    sig.save(fname)
    r = hs.load(fname, lazy=lazy_load)
    if make is _completed:
        assert type(r) is (LazySignal2D if lazy_load else Signal2D)
    else:
        assert type(r) is (LazyPartialScan2D if lazy_load else PartialScan2D)
    assert r.data.dtype == np.float32
    np.testing.assert_array_equal(array_of(r), array_of(sig))  # NaN included
    assert axes_summary(r) == axes_summary(sig)
    assert_tree_equal(r.original_metadata, sig.original_metadata)
    ours = sig.metadata.Signal.Partial_scan.as_dictionary()
    assert_tree_equal(r.metadata.Signal.Partial_scan, ours)
    assert r.metadata.General.title == sig.metadata.General.title
    # the recorded scan path survives: regenerated (simulated) or stored (positions)
    r.axes_manager.indices = sig.axes_manager.indices
    np.testing.assert_array_equal(scan_path_of(r), scan_path_of(sig))
    if make is _from_positions:
        assert isinstance(scan_path_of(r), np.ndarray)
        # and saving the loaded signal again keeps the positions
        again = tmp_path / f"again.{ext}"
        r.save(again)
        r2 = hs.load(again)
        np.testing.assert_array_equal(np.asarray(r2.metadata.Signal.Partial_scan.positions), scan_path_of(sig))


# ------------------------------------------------------------------ the scan path


@pytest.mark.parametrize("lazy", LAZY)
def test_scan_path_of_per_frame(lazy):
    p = _partial(lazy, vary_per_frame=True)
    paths = []
    for iy in range(2):
        for ix in range(3):
            p.axes_manager.indices = (ix, iy)
            paths.append(scan_path_of(p))
    assert not np.array_equal(paths[0], paths[1])
    data = array_of(p).reshape(6, 48, 48)
    for k, pos in enumerate(paths):
        np.testing.assert_array_equal(scan_path_of(p, index=k), pos)
        mask = np.zeros((48, 48), bool)
        r, c = np.rint(pos).astype(int).T
        mask[r, c] = True
        np.testing.assert_array_equal(mask, np.isfinite(data[k]))


@pytest.mark.parametrize("lazy", LAZY)
@pytest.mark.parametrize("max_points", [50, 333, 100000])
def test_plot_scan_path(lazy, max_points, close_figures):
    p = _partial(lazy, nav_shape=(2,), size=64)
    snap = snapshot(p)
    pos = scan_path_of(p)
    assert len(pos) > 333
    ax = p.plot_scan_path(max_points=max_points)
    assert_unchanged(p, snap)
    path_line = ax.lines[0]
    start, end = (next(line for line in ax.lines if line.get_label() == k) for k in ("start", "end"))
    n = int(np.isfinite(path_line.get_xdata()).sum())  # NaN rows separate the continuous segments
    assert n <= max_points
    assert n >= min(len(pos), max_points) // 2
    sy = p.axes_manager.signal_axes[1]
    sx = p.axes_manager.signal_axes[0]
    # vertices in calibrated units, in acquisition order
    assert path_line.get_xdata()[0] == pytest.approx(sx.offset + pos[0, 1] * sx.scale)
    assert path_line.get_ydata()[0] == pytest.approx(sy.offset + pos[0, 0] * sy.scale)
    assert end.get_xdata()[0] == pytest.approx(sx.offset + pos[-1, 1] * sx.scale)
    assert end.get_ydata()[0] == pytest.approx(sy.offset + pos[-1, 0] * sy.scale)
    assert len(ax.images) == 1
    assert "spiral" in ax.get_title()


def test_plot_scan_path_positions_and_function(close_figures):
    import matplotlib.pyplot as plt

    pos = np.array([(0, 0), (0, 5), (3, 5), (3, 0)], float)
    p = hp.from_scan_positions(pos, [1, 2, 3, 4], (4, 6))
    _, ax = plt.subplots()
    out = hp.plot_scan_path(p, ax=ax, color="red")
    assert out is ax
    # every move longer than 3 px is a flyback (here the two 5 px moves): drawn apart, dotted; vertices kept in order
    path = np.stack([ax.lines[0].get_ydata(), ax.lines[0].get_xdata()], 1)
    np.testing.assert_array_equal(path[np.isfinite(path[:, 0])], pos)
    jumps = next(line for line in ax.lines if line.get_label().startswith("flybacks"))
    assert jumps.get_label() == "flybacks (2)" and jumps.get_linestyle() == ":"


def test_plot_scan_path_draws_flybacks_apart(close_figures):
    p = hp.to_partial_scan(make_signal((), False, 64), "lines", 0.1, seed=0)
    ax = p.plot_scan_path()
    labels = [line.get_label() for line in ax.lines]
    flybacks = [k for k in labels if k.startswith("flybacks")]
    assert flybacks and int(flybacks[0].split("(")[1].rstrip(")")) >= 3  # one per line change


@pytest.mark.parametrize("lazy", LAZY)
def test_plot_scan_path_errors(lazy, close_figures):
    s = make_signal((), lazy, 32)
    s.set_signal_type("partial_scan")
    snap = snapshot(s)
    with pytest.raises(ValueError, match="records no scan path"):
        s.plot_scan_path()
    assert_unchanged(s, snap)
    acquired = hp.as_partial_scan(make_signal((), lazy, 32), unscanned_value=0)
    with pytest.raises(ValueError, match="no recorded probe positions"):
        acquired.plot_scan_path()
    cropped = _partial(lazy, nav_shape=(), size=48).isig[:32, :32]
    with pytest.raises(ValueError, match="cropped or resized"):
        cropped.plot_scan_path()
    with pytest.raises(ValueError, match="max_points"):
        _partial(lazy, nav_shape=(), size=48).plot_scan_path(max_points=0)
