"""Scan paths: coverage, determinism, ordering, dwell, validation."""

import numpy as np
import pytest

from hyperspy_partialscan.paths import PATHS, ScanPath, generate_path, path_names, validate_coverage

SHAPE = (512, 512)


def test_path_names():
    assert set(path_names()) == set(PATHS) == {
        "spiral", "grid", "jittered_grid", "random", "lissajous", "line_hop", "lines"
    }


@pytest.mark.parametrize("name", sorted(PATHS))
@pytest.mark.parametrize("coverage", [1 / 10, 1 / 20, 1 / 50])
def test_measured_coverage_matches_request(name, coverage):
    p = generate_path(name, SHAPE, coverage, 7)
    assert isinstance(p, ScanPath)
    assert p.name == name and p.shape == SHAPE
    assert p.mask.shape == SHAPE and p.mask.dtype == bool
    assert p.coverage == pytest.approx(p.mask.mean())
    assert abs(p.coverage / coverage - 1) <= 0.10, (name, coverage, p.coverage)
    assert p.positions.ndim == 2 and p.positions.shape[1] == 2
    assert p.dwell.shape == (len(p.positions),)
    assert p.dwell.mean() == pytest.approx(1.0)
    # positions all rasterise inside the field
    rows, cols = p.pixel_indices
    assert len(rows) == len(p.positions)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_deterministic_for_seed_and_seeds_differ(name):
    a = generate_path(name, (128, 128), 0.1, 3)
    b = generate_path(name, (128, 128), 0.1, 3)
    c = generate_path(name, (128, 128), 0.1, 4)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.dwell, b.dwell)
    assert a.options == b.options
    assert a.positions.shape != c.positions.shape or not np.array_equal(a.positions, c.positions)
    # a Generator in the same state gives the same path
    d = generate_path(name, (128, 128), 0.1, np.random.default_rng(3))
    np.testing.assert_array_equal(a.positions, d.positions)


@pytest.mark.parametrize("name", ["grid", "lines", "random"])
def test_full_coverage_scans_every_pixel(name):
    for seed in range(5):
        p = generate_path(name, (37, 53), 1.0, seed)
        assert p.mask.all(), (name, seed)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_tiny_coverage_scans_at_least_one_pixel(name):
    """A request below one line/arm on a small frame still samples something (or errors clearly)."""
    if name == "jittered_grid":
        with pytest.raises(ValueError, match="cannot reach coverage"):
            generate_path(name, (16, 16), 0.001, 0)
        return
    for seed in range(3):
        assert generate_path(name, (16, 16), 0.001, seed).mask.sum() >= 1


# ------------------------------------------------------------------ ordering


def test_spiral_radius_grows_along_path():
    p = generate_path("spiral", (256, 256), 0.05, 1, centre_jitter=0)
    centre = np.array(p.options["centre"])
    np.testing.assert_allclose(centre, [127.5, 127.5])
    r = np.hypot(*(p.positions - centre).T)
    assert np.all(np.diff(r) >= -1e-9)
    assert r[0] < 1 and r[-1] > 127


def _border_distance(pts, shape):
    return np.minimum.reduce([pts[:, 0] + 0.5, shape[0] - 0.5 - pts[:, 0], pts[:, 1] + 0.5, shape[1] - 0.5 - pts[:, 1]])


@pytest.mark.parametrize("coverage", [0.1, 0.02])
def test_spiral_continuous_except_where_it_leaves_the_field(coverage):
    shape = (256, 256)
    p = generate_path("spiral", shape, coverage, 2)
    steps = np.hypot(*np.diff(p.positions, axis=0).T)
    assert steps.max() > 1.5  # the arms leave the square field near its edges
    jumps = np.flatnonzero(steps > 1.5)
    assert len(jumps) < 0.05 * len(steps)
    # every jump goes from near the border to near the border
    assert np.all(_border_distance(p.positions[jumps], shape) < 1.5)
    assert np.all(_border_distance(p.positions[jumps + 1], shape) < 1.5)
    assert np.all(steps[steps <= 1.5] <= 1.0 + 1e-9)  # step=1 along the arc: chords are at most 1


def test_lissajous_continuous():
    p = generate_path("lissajous", (128, 128), 0.1, 0)
    steps = np.hypot(*np.diff(p.positions, axis=0).T)
    assert steps.max() <= 1.01  # step=1 along the curve (arc resampling rounds the count)
    assert steps.min() > 0.5


def _lines_of(pos, n_fast, fast_axis):
    """Split positions into scan lines of ``n_fast`` points along ``fast_axis``."""
    assert len(pos) % n_fast == 0
    lines = pos.reshape(-1, n_fast, 2)
    np.testing.assert_array_equal(lines[..., fast_axis], np.broadcast_to(np.arange(n_fast), lines.shape[:2]))
    return lines


@pytest.mark.parametrize("directions", ["both", "rows", "columns"])
def test_jittered_grid_lines_ordered_and_continuous(directions):
    h, w = 96, 128
    p = generate_path("jittered_grid", (h, w), 0.1, 5, directions=directions)
    pos = p.positions
    # row lines (fast axis = columns 0..w-1) come first, then column lines (fast axis = rows 0..h-1)
    cut = 0
    while directions != "columns" and cut < len(pos) and np.array_equal(pos[cut: cut + w, 1], np.arange(w)):
        cut += w
    blocks, slows = [], []
    if directions != "columns":
        assert cut > 0
        blocks.append(_lines_of(pos[:cut], w, 1))
        slows.append(0)
    if directions != "rows":
        blocks.append(_lines_of(pos[cut:], h, 0))
        slows.append(1)
    else:
        assert cut == len(pos)
    for lines, slow in zip(blocks, slows, strict=True):
        assert len(lines) >= 2
        # nominal line positions increase line by line (slow coordinate ordered per direction block)
        means = lines[..., slow].mean(axis=1)
        assert np.all(np.diff(means) > 0)
        # each line is continuous: unit steps along the fast axis, smooth jitter across it
        steps = np.hypot(*np.diff(lines, axis=1).reshape(-1, 2).T)
        assert steps.max() <= 1.5
        assert steps.min() >= 1.0
        assert lines[..., slow].std(axis=1).max() > 0  # jittered, not straight


@pytest.mark.parametrize("serpentine", [False, True])
def test_grid_raster_order(serpentine):
    p = generate_path("grid", (128, 96), 0.05, 1, serpentine=serpentine)
    rows, cols = p.positions.T
    assert np.all(np.diff(rows) >= 0)
    row_ids = np.unique(rows)
    for k, r in enumerate(row_ids):
        c = cols[rows == r]
        d = np.diff(c)
        if serpentine and k % 2:
            assert np.all(d < 0)
        else:
            assert np.all(d > 0)


@pytest.mark.parametrize("direction, slow, fast", [("rows", 0, 1), ("columns", 1, 0)])
def test_lines_order_and_continuity(direction, slow, fast):
    h, w = 100, 80
    p = generate_path("lines", (h, w), 0.1, 2, direction=direction)
    pos = p.positions
    assert np.all(np.diff(pos[:, slow]) >= 0)
    n_fast = (h, w)[fast]
    lines = _lines_of(pos, n_fast, fast)
    assert np.all(np.diff(lines[..., slow], axis=1) == 0)  # straight lines
    steps = np.hypot(*np.diff(lines, axis=1).reshape(-1, 2).T)
    np.testing.assert_array_equal(steps, 1.0)


def test_random_raster_and_random_order():
    shape = (64, 64)
    p = generate_path("random", shape, 0.2, 0, order="raster")
    flat = np.ravel_multi_index(p.positions.astype(int).T, shape)
    assert np.all(np.diff(flat) > 0)  # raster order, no repeats
    q = generate_path("random", shape, 0.2, 0, order="random")
    flat_q = np.ravel_multi_index(q.positions.astype(int).T, shape)
    assert len(np.unique(flat_q)) == len(flat_q)
    assert not np.all(np.diff(flat_q) > 0)


def test_line_hop_bands_in_order():
    h, w = 128, 128
    p = generate_path("line_hop", (h, w), 0.1, 3)
    d = p.options["band"]
    assert d == pytest.approx(10.0)
    rows, cols = p.positions.T
    # within a band the probe only moves forward along the fast axis; bands follow each other
    change = np.flatnonzero(np.diff(cols) < 0)  # fast-axis restarts = new band
    bands = np.split(np.arange(len(rows)), change + 1)
    band_lo = [rows[b].min() for b in bands]
    assert np.all(np.diff(band_lo) > 0)
    for b in bands:
        assert np.all(np.diff(cols[b]) >= 1)
        assert rows[b].max() - rows[b].min() < d + 1


# ------------------------------------------------------------------ spiral dwell and gap


def test_spiral_angular_dwell_inverse_radius():
    p = generate_path("spiral", (256, 256), 0.05, 4, speed="angular", centre_jitter=0)
    centre = np.array(p.options["centre"])
    r = np.hypot(*(p.positions - centre).T)
    assert p.dwell.mean() == pytest.approx(1.0)
    product = p.dwell * np.maximum(r, 1.0)
    np.testing.assert_allclose(product, product[0], rtol=1e-9)  # dwell proportional to 1 / r
    inner, outer = r < 30, r > 100
    assert p.dwell[inner].min() > p.dwell[outer].max()
    assert p.options["speed"] == "angular"


def test_spiral_linear_equal_dwell():
    p = generate_path("spiral", (256, 256), 0.05, 4, speed="linear")
    np.testing.assert_array_equal(p.dwell, 1.0)


@pytest.mark.parametrize("coverage", [0.1, 0.05, 0.02])
def test_spiral_arm_gap_about_inverse_coverage(coverage):
    p = generate_path("spiral", SHAPE, coverage, 0, centre_jitter=0)
    gap = p.options["gap"]
    assert gap * coverage == pytest.approx(1.0, abs=0.1)
    # the geometric gap between successive arms is the recorded one
    centre = np.array(p.options["centre"])
    d = p.positions - centre
    r = np.hypot(*d.T)
    inner = r < min(SHAPE) / 2 - 1  # a prefix of the path: no positions dropped there
    theta = np.unwrap(np.arctan2(d[inner, 0], d[inner, 1]))
    slope = np.polyfit(theta, r[inner], 1)[0]
    assert abs(slope) * 2 * np.pi == pytest.approx(gap, rel=1e-3)


def test_spiral_fixed_gap():
    p = generate_path("spiral", (128, 128), 0.5, 0, gap=12.0)
    assert p.options["gap"] == 12.0
    assert p.coverage == pytest.approx(1 / 12, rel=0.15)


# ------------------------------------------------------------------ windows


def test_window_and_transposed():
    p = generate_path("random", (64, 48), 0.2, 0)
    w = p.window(10, 5, (20, 30))
    assert w.shape == (20, 30)
    np.testing.assert_array_equal(w.mask, p.mask[10:30, 5:35])
    t = p.transposed()
    assert t.shape == (48, 64)
    np.testing.assert_array_equal(t.mask, p.mask.T)


# ------------------------------------------------------------------ errors


def test_unknown_path():
    with pytest.raises(ValueError, match="unknown scan path 'zigzag'.*spiral"):
        generate_path("zigzag", (64, 64), 0.1, 0)


@pytest.mark.parametrize(
    "name, options, exc, match",
    [
        ("spiral", {"speed": "fast"}, ValueError, "speed"),
        ("spiral", {"step": 0}, ValueError, "step"),
        ("spiral", {"step": -1}, ValueError, "step"),
        ("spiral", {"gap": 0}, ValueError, "gap"),
        ("spiral", {"gap": "wide"}, ValueError, "gap"),
        ("spiral", {"centre_jitter": 2}, ValueError, "centre_jitter"),
        ("spiral", {"colour": "red"}, TypeError, "invalid option.*spiral.*colour"),
        ("grid", {"spacing": 0.5}, ValueError, "spacing"),
        ("grid", {"spacing": np.nan}, ValueError, "spacing"),
        ("lines", {"direction": "diagonal"}, ValueError, "direction"),
        ("lines", {"spacing": -2}, ValueError, "spacing"),
        ("jittered_grid", {"directions": "x"}, ValueError, "directions"),
        ("jittered_grid", {"spacing": 0}, ValueError, "spacing"),
        ("jittered_grid", {"correlation": 0}, ValueError, "correlation"),
        ("jittered_grid", {"jitter": -1}, ValueError, "jitter"),
        ("random", {"order": "spiral"}, ValueError, "order"),
        ("lissajous", {"ratio": 0}, ValueError, "ratio"),
        ("lissajous", {"ratio": np.inf}, ValueError, "ratio"),
        ("lissajous", {"step": 0}, ValueError, "step"),
        ("line_hop", {"segment_length": 0}, ValueError, "segment_length"),
        ("line_hop", {"band": 0.5}, ValueError, "band"),
    ],
)
def test_bad_options(name, options, exc, match):
    with pytest.raises(exc, match=match) as info:
        generate_path(name, (64, 64), 0.1, 0, **options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("spiral", {"step": True}, "spiral step must be a finite number > 0, not True"),
        ("spiral", {"gap": "wide"}, "spiral gap must be a finite number > 0 or None, not 'wide'"),
        ("spiral", {"centre_jitter": 2}, "spiral centre_jitter must be in [0, 0.5], got 2"),
        ("spiral", {"speed": "fast"}, "spiral speed must be 'linear' or 'angular', not 'fast'"),
        ("grid", {"spacing": 0.5}, "grid spacing must be a finite number >= 1, got 0.5"),
        ("lines", {"spacing": np.nan}, "line spacing must be a finite number >= 1, got nan"),
        ("jittered_grid", {"jitter": -1}, "jittered_grid jitter must be a finite number >= 0 or None, got -1"),
        ("lissajous", {"ratio": np.inf}, "lissajous ratio must be a finite number > 0 or None, got inf"),
        ("line_hop", {"band": 0.5}, "line_hop band must be a finite number >= 1, got 0.5"),
        ("random", {"order": "spiral"}, "order must be 'raster' or 'random', not 'spiral'"),
    ],
)
def test_bad_option_messages_name_the_option_and_range(name, options, message):
    with pytest.raises(ValueError) as info:
        generate_path(name, (64, 64), 0.1, 0, **options)
    assert str(info.value) == message


def test_family_functions_exported_and_registered():
    from hyperspy_partialscan import paths

    for name in paths.__all__:
        assert hasattr(paths, name), name
    for name, fn in PATHS.items():
        assert getattr(paths, name) is fn and fn.__name__ == name
    p = paths.spiral(SHAPE, 0.05, np.random.default_rng(1))
    np.testing.assert_array_equal(p.positions, generate_path("spiral", SHAPE, 0.05, 1).positions)


@pytest.mark.parametrize(
    "name, options",
    [("spiral", {"step": 5.0}), ("lissajous", {"ratio": 1.0})],  # too coarse / closed curve
)
def test_unreachable_coverage_is_a_clear_error(name, options):
    with pytest.raises(ValueError, match=f"{name} path cannot reach coverage"):
        generate_path(name, (64, 64), 0.9, 0, **options)


@pytest.mark.parametrize("coverage", [0, -0.1, 1.0001, 2, np.nan, np.inf, -np.inf, "a lot", None])
def test_bad_coverage(coverage):
    with pytest.raises(ValueError, match="coverage"):
        generate_path("spiral", (64, 64), coverage, 0)
    with pytest.raises(ValueError, match="coverage"):
        validate_coverage(coverage)


@pytest.mark.parametrize("shape", [(0, 64), (64,), (8, 8, 8), (-4, 4)])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        generate_path("random", shape, 0.1, 0)
