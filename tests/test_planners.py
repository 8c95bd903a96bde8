"""planners: the segment rule, binned planning, defaults; training's adaptive-style paths."""

import numpy as np
import pytest

from hyperspy_partialscan.paths import generate_path
from hyperspy_partialscan.planners import (
    PointsPlanner,
    choose_segments,
    default_footprint,
    default_segment_length,
    nearest_order,
)
from hyperspy_partialscan.specimens import nanoparticle_field
from hyperspy_partialscan.training.adaptive_masks import adaptive_style_path, proxy_sigma


def _gain(shape=(64, 64), seed=0):
    return np.random.default_rng(seed).uniform(0.1, 1.0, shape)


def test_choose_segments_budget_order_and_input_kept():
    gain = _gain()
    before = gain.copy()
    pos = choose_segments(gain, np.array([5.0, 5.0]), 100, 20, np.random.default_rng(1))
    np.testing.assert_array_equal(gain, before)  # the caller's map is not modified
    assert len(pos) == 100
    assert np.all((pos >= 0) & (pos <= 63))
    steps = np.hypot(*np.diff(pos, axis=0).T)
    assert np.sum(steps > 3) <= 100 // 20  # short steps within a segment; jumps only between segments
    pixels = {tuple(p) for p in np.rint(pos).astype(int)}
    assert len(pixels) == len(pos)  # every position a new pixel: no dose spent twice


def test_choose_segments_skips_scanned_pixels():
    gain = np.ones((32, 32))
    gain[:, 10:20] = 0.0  # a scanned band: crossing it costs nothing
    pos = choose_segments(gain, None, 200, 32, np.random.default_rng(0))
    rows, cols = np.rint(pos).astype(int).T
    assert np.all(gain[rows, cols] > 0)


def test_choose_segments_is_deterministic_with_a_seed():
    a = choose_segments(_gain(), None, 60, 15, np.random.default_rng(3))
    b = choose_segments(_gain(), None, 60, 15, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_choose_segments_goes_where_the_gain_is():
    gain = np.full((64, 64), 0.01)
    gain[40:56, 40:56] = 1.0
    pos = choose_segments(gain, None, 64, 8, np.random.default_rng(0))
    inside = (pos[:, 0] >= 39.5) & (pos[:, 0] < 56) & (pos[:, 1] >= 39.5) & (pos[:, 1] < 56)
    assert inside.mean() > 0.8


def test_choose_segments_respects_max_jump():
    gain = np.zeros((64, 64))
    gain[60, :] = 1.0  # all the gain is far from the probe
    pos = choose_segments(gain, np.array([0.0, 0.0]), 30, 10, np.random.default_rng(0), max_jump=20)
    assert len(pos) == 0


def test_footprint_spreads_segments_apart():
    gain = np.ones((96, 96))
    near = choose_segments(gain, None, 200, 40, np.random.default_rng(0), footprint=0.0)
    far = choose_segments(gain, None, 200, 40, np.random.default_rng(0), footprint=8.0)

    def mean_nearest_other(pos):  # mean distance from each sample to the nearest sample of another segment
        seg = np.arange(len(pos)) // 40
        d = np.hypot(*(pos[:, None] - pos[None]).transpose(2, 0, 1))
        d[seg[:, None] == seg[None]] = np.inf
        return np.mean(d.min(1))

    assert mean_nearest_other(far) > 1.5 * mean_nearest_other(near)


def test_defaults_scale_with_the_spacing():
    assert default_segment_length(1 / 40) == 2 * default_segment_length(1 / 20)
    assert default_footprint(1 / 40) == 2 * default_footprint(1 / 20)
    assert default_segment_length(0.9) == 4


def test_nearest_order_visits_every_point_once():
    pts = np.random.default_rng(0).uniform(0, 50, (30, 2))
    out = nearest_order(pts, None)
    assert sorted(map(tuple, out)) == sorted(map(tuple, pts))


@pytest.mark.parametrize("plan_bin", [1, 2])
def test_points_planner_picks_unscanned_pixels(plan_bin):
    frame = nanoparticle_field((256, 256), seed=1)
    mask = generate_path("spiral", frame.shape, 0.03, 0).mask
    partial = np.where(mask, frame, np.nan)
    planner = PointsPlanner(device="cpu", plan_bin=plan_bin)
    pos = planner.plan(partial, None, 50, np.random.default_rng(0))
    rows, cols = np.rint(pos).astype(int).T
    assert len(pos) == 50 and not mask[rows, cols].any()
    assert planner.history[-1].shape == frame.shape


def test_proxy_sigma_is_zero_on_samples_and_follows_structure():
    truth = nanoparticle_field((128, 128), seed=3)
    mask = generate_path("jittered_grid", truth.shape, 0.05, 0).mask
    s = proxy_sigma(truth, mask, 5.0)
    assert np.all(s[mask] == 0) and np.all(s >= 0)
    flat = np.zeros_like(truth)
    assert proxy_sigma(flat, mask, 5.0).max() < s.max()


@pytest.mark.parametrize("style", [None, "curvature", "uncertainty"])
def test_adaptive_style_path_extends_the_initial_path(style):
    truth = nanoparticle_field((128, 128), seed=0)
    initial = generate_path("spiral", truth.shape, 0.02, 0)
    p = adaptive_style_path(truth, initial, 700, np.random.default_rng(0), style=style)
    n0 = len(initial.positions)
    np.testing.assert_array_equal(p.positions[:n0], initial.positions)  # the static start comes first
    assert n0 < len(p.positions) <= 700 and p.shape == truth.shape
    assert adaptive_style_path(truth, initial, n0, np.random.default_rng(0)) is initial


def test_adaptive_style_paths_imitate_each_planners_segments():
    """The curvature style (the default planner) scans short dashes, the uncertainty style long segments."""
    truth = nanoparticle_field((128, 128), seed=0)
    initial = generate_path("spiral", truth.shape, 0.02, 0)
    n0 = len(initial.positions)

    def jumps(style):
        added = adaptive_style_path(truth, initial, 800, np.random.default_rng(1), style=style).positions[n0:]
        return int((np.linalg.norm(np.diff(added, axis=0), axis=1) > 3).sum())  # jumps between segments

    assert jumps("curvature") > 2 * jumps("uncertainty")
    with pytest.raises(ValueError, match="style must be one of"):
        adaptive_style_path(truth, initial, 800, np.random.default_rng(1), style="spiral")


@pytest.mark.parametrize("gain", ["reduction", "sigma", "curvature"])
def test_uncertainty_planner_plans_unscanned_segments(gain):
    from hyperspy_partialscan.planners import UncertaintyPlanner

    frame = nanoparticle_field((128, 128), seed=2)
    mask = generate_path("spiral", frame.shape, 0.03, 0).mask
    partial = np.where(mask, frame, np.nan)
    planner = UncertaintyPlanner(12, footprint=6.0, gain=gain, device="cpu")
    pos = planner.plan(partial, None, 120, np.random.default_rng(0))
    rows, cols = np.rint(pos).astype(int).T
    assert 0 < len(pos) <= 120 and not mask[rows, cols].any()
    assert np.all(planner.history[-1] >= 0)


def test_uncertainty_planner_gain_is_checked():
    from hyperspy_partialscan.planners import UncertaintyPlanner

    with pytest.raises(ValueError, match="gain must be one of"):
        UncertaintyPlanner(10, gain="entropy")


def test_curvature_planner_scans_the_structure_not_the_vacuum():
    """Particles on the left half, vacuum on the right: the curvature gain sends more segments left (the floor
    and the spiral's gaps keep some in the vacuum). At 2 % the 50 px gaps, not the curvature, lead the gain
    (d**4): left and right came out level and either way by chance, so the initial scan is a 5 % spiral."""
    from hyperspy_partialscan.planners import UncertaintyPlanner

    frame = nanoparticle_field((128, 128), seed=2)
    frame[:, 64:] = np.median(frame[:, 64:])
    mask = generate_path("spiral", frame.shape, 0.05, 0).mask
    partial = np.where(mask, frame, np.nan)
    planner = UncertaintyPlanner(12, footprint=6.0, gain="curvature", device="cpu")
    pos = planner.plan(partial, None, 200, np.random.default_rng(0))
    left = np.count_nonzero(pos[:, 1] < 64)
    assert left > 1.3 * (len(pos) - left)
