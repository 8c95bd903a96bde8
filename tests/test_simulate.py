"""The scan simulator: clean sampling, noise statistics, scan distortions, NoiseModel validation."""

import numpy as np
import pytest

from hyperspy_partialscan.paths import generate_path
from hyperspy_partialscan.simulate import NoiseModel, frame_rng, path_rng, sample_frame


def _ramp(shape, a=2.0, b=0.5, c=1.0):
    """f[i, j] = c + b * i + a * j (linear interpolation reproduces it exactly)."""
    i, j = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return c + b * i + a * j


@pytest.mark.parametrize("name", ["spiral", "random", "lissajous", "jittered_grid"])
def test_clean_sampling_exact(name):
    rng = np.random.default_rng(0)
    frame = rng.random((64, 80)).astype(np.float32)
    path = generate_path(name, frame.shape, 0.2, 1)
    out = sample_frame(frame, path)
    assert out.dtype == np.float32 and out.shape == frame.shape
    np.testing.assert_array_equal(np.isfinite(out), path.mask)
    np.testing.assert_array_equal(out[path.mask], frame[path.mask])
    assert np.isnan(out[~path.mask]).all()
    assert NoiseModel().is_clean


def test_clean_sampling_integer_frame():
    frame = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    path = generate_path("grid", frame.shape, 0.25, 0)
    out = sample_frame(frame, path)
    np.testing.assert_array_equal(out[path.mask], frame[path.mask].astype(np.float32))


def test_frame_shape_mismatch():
    path = generate_path("random", (32, 32), 0.1, 0)
    with pytest.raises(ValueError, match="does not match"):
        sample_frame(np.zeros((32, 31)), path)


def test_poisson_statistics():
    """Counts = value / full_scale * dose have variance equal to their mean."""
    dose, level = 40.0, 5.0
    frame = np.full((256, 256), level, np.float32)
    path = generate_path("random", frame.shape, 0.5, 0)  # one position per pixel
    out = sample_frame(frame, path, NoiseModel(dose=dose), np.random.default_rng(1))
    counts = out[path.mask].astype(np.float64) / level * dose
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # whole electrons
    assert counts.mean() == pytest.approx(dose, rel=0.01)
    assert counts.var() == pytest.approx(counts.mean(), rel=0.05)


def test_poisson_scales_with_dwell():
    """Dose is per position at full scale times the relative dwell."""
    frame = np.full((128, 128), 1.0, np.float32)
    path = generate_path("random", frame.shape, 0.5, 0)
    path = type(path)(path.positions, np.full(len(path.positions), 4.0), path.shape, path.name)
    out = sample_frame(frame, path, NoiseModel(dose=10.0), np.random.default_rng(2))
    counts = out[path.mask].astype(np.float64) * 40.0  # electrons = value * dose * dwell
    assert counts.var() == pytest.approx(counts.mean(), rel=0.06)
    assert counts.mean() == pytest.approx(40.0, rel=0.02)


def test_detector_gaussian_sigma():
    sigma = 0.05
    frame = np.full((256, 256), 2.0, np.float32)
    path = generate_path("random", frame.shape, 0.5, 0)
    out = sample_frame(frame, path, NoiseModel(detector_sigma=sigma), np.random.default_rng(3))
    v = out[path.mask].astype(np.float64)
    assert v.mean() == pytest.approx(2.0, rel=0.005)
    assert v.std() / 2.0 == pytest.approx(sigma, rel=0.03)  # fraction of full scale


def test_detector_sigma_relative_to_range_for_negative_frames():
    """With negative values, zero is the minimum: sigma is relative to max - min."""
    sigma = 0.02
    frame = (_ramp((256, 256), a=4 / 255, b=0, c=-1.0)).astype(np.float32)  # -1 .. 3
    path = generate_path("random", frame.shape, 0.5, 0)
    out = sample_frame(frame, path, NoiseModel(detector_sigma=sigma), np.random.default_rng(4))
    resid = (out - frame)[path.mask].astype(np.float64)
    assert resid.std() / 4.0 == pytest.approx(sigma, rel=0.03)
    assert abs(resid.mean()) < 0.01


def test_drift_moves_where_the_sample_is_read():
    shape = (64, 64)
    a, b = 2.0, 0.5
    frame = _ramp(shape, a=a, b=b)
    path = generate_path("random", shape, 0.3, 0, order="raster")
    drift = (3.0, -5.0)
    out = sample_frame(frame, path, NoiseModel(drift=drift))
    n = len(path.positions)
    t = np.linspace(0, 1, n)
    read = path.positions + t[:, None] * np.array(drift)
    inside = (read[:, 0] >= 0) & (read[:, 0] <= 63) & (read[:, 1] >= 0) & (read[:, 1] <= 63)
    rows, cols = path.positions[inside].astype(int).T
    expected = 1.0 + b * read[inside, 0] + a * read[inside, 1]
    np.testing.assert_allclose(out[rows, cols], expected, rtol=1e-6)
    # the value is recorded at the nominal position: the mask is unchanged
    np.testing.assert_array_equal(np.isfinite(out), path.mask)
    # last positions are read ~(3, -5) px away: value shifted by 3 b - 5 a
    last = inside.nonzero()[0][-1]
    r, c = path.positions[last].astype(int)
    assert out[r, c] - frame[r, c] == pytest.approx(b * 3 * t[last] - a * 5 * t[last], rel=1e-5)


def test_position_jitter_statistics():
    shape = (128, 128)
    frame = _ramp(shape, a=1.0, b=0.0)  # value = column + 1
    path = generate_path("random", shape, 0.5, 0)
    out = sample_frame(frame, path, NoiseModel(position_jitter=0.7), np.random.default_rng(5))
    rows, cols = path.positions.astype(int).T
    interior = (cols > 8) & (cols < shape[1] - 9)
    resid = out[rows, cols][interior] - frame[rows, cols][interior]  # = column displacement
    assert resid.std() == pytest.approx(0.7, rel=0.03)
    assert abs(resid.mean()) < 0.02
    # independent errors: no correlation along the acquisition order
    assert abs(np.corrcoef(resid[:-1], resid[1:])[0, 1]) < 0.05


def test_line_jitter_smooth_and_scaled():
    shape = (128, 128)
    frame = _ramp(shape, a=1.0, b=0.0)
    path = generate_path("random", shape, 0.5, 0, order="raster")
    out = sample_frame(frame, path, NoiseModel(line_jitter=0.8, jitter_correlation=30), np.random.default_rng(6))
    rows, cols = path.positions.astype(int).T
    resid = (out[rows, cols] - frame[rows, cols]).astype(np.float64)
    interior = (cols > 8) & (cols < shape[1] - 9)
    assert resid[interior].std() == pytest.approx(0.8, rel=0.05)
    assert np.corrcoef(resid[:-1], resid[1:])[0, 1] > 0.9  # time-correlated


def test_slow_pixel_attenuation():
    """Pixels with accumulated dwell below one nominal dwell lose signal in proportion."""
    shape = (128, 128)
    frame = np.full(shape, 3.0, np.float32)
    path = generate_path("spiral", shape, 0.1, 0, speed="angular", centre_jitter=0)
    att = 0.5
    out = sample_frame(frame, path, NoiseModel(slow_pixel_attenuation=att))
    rows, cols = path.pixel_indices
    wsum = np.bincount(rows * shape[1] + cols, weights=path.dwell, minlength=frame.size).reshape(shape)
    hit = path.mask
    expected = 3.0 * (1 - att * (1 - np.clip(wsum[hit], 0, 1)))
    np.testing.assert_allclose(out[hit], expected, rtol=1e-6)
    low = hit & (wsum < 1)
    assert low.sum() > 0.2 * hit.sum()
    assert (out[low] < 3.0).all()
    np.testing.assert_array_equal(out[hit & (wsum >= 1)], 3.0)
    # low-dwell pixels are the fast, outer ones
    centre = np.array(path.options["centre"])
    rr = np.hypot(*(np.argwhere(hit) - centre).T)
    assert rr[low[hit]].mean() > rr[~low[hit]].mean()


def test_noise_reproducible_for_a_seed_and_streams_independent():
    frame = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    path = generate_path("spiral", frame.shape, 0.2, 0)
    noise = NoiseModel(dose=20, detector_sigma=0.01, line_jitter=0.3)
    a = sample_frame(frame, path, noise, frame_rng(7, 2, stream=1))
    b = sample_frame(frame, path, noise, frame_rng(7, 2, stream=1))
    c = sample_frame(frame, path, noise, frame_rng(7, 3, stream=1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c, equal_nan=True)
    # streams of one frame, and the next seed's streams, are different generators
    draws = {
        key: frame_rng(*key[:2], stream=key[2]).random(4).tobytes()
        for key in [(7, 2, 0), (7, 2, 1), (8, 2, 0), (8, 2, 1), (7, 3, 0)]
    }
    assert len(set(draws.values())) == len(draws)


@pytest.mark.parametrize("seed", [0, 7, np.int64(7), 2**63 - 1])
def test_path_rng_one_rule_for_every_frame(seed):
    """Shared path: the stack seed itself for every frame; varied path: frame_rng(seed, index)."""
    for index in (0, 1, 5):
        assert path_rng(seed, index, False) is seed
        assert path_rng(seed, index, np.False_) is seed  # flags read back from metadata
        for vary in (True, np.True_):
            rng = path_rng(seed, index, vary)
            assert isinstance(rng, np.random.Generator)
            assert rng.random(4).tobytes() == frame_rng(seed, index).random(4).tobytes()
    shared = [generate_path("spiral", (48, 48), 0.1, path_rng(seed, i, False)).positions for i in range(3)]
    varied = [generate_path("spiral", (48, 48), 0.1, path_rng(seed, i, True)).positions for i in range(3)]
    np.testing.assert_array_equal(shared[0], shared[2])
    np.testing.assert_array_equal(shared[0], generate_path("spiral", (48, 48), 0.1, seed).positions)
    assert not np.array_equal(varied[0], varied[1])
    np.testing.assert_array_equal(varied[1], generate_path("spiral", (48, 48), 0.1, frame_rng(seed, 1)).positions)


# ------------------------------------------------------------------ NoiseModel validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dose": 0}, "dose"),
        ({"dose": -5}, "dose"),
        ({"dose": np.nan}, "dose"),
        ({"dose": np.inf}, "dose"),
        ({"dose": "many"}, "dose"),
        ({"detector_sigma": -0.1}, "detector_sigma"),
        ({"detector_sigma": np.nan}, "detector_sigma"),
        ({"detector_sigma": None}, "detector_sigma"),
        ({"position_jitter": -1}, "position_jitter"),
        ({"line_jitter": np.inf}, "line_jitter"),
        ({"jitter_correlation": 0}, "jitter_correlation"),
        ({"jitter_correlation": np.nan}, "jitter_correlation"),
        ({"jitter_correlation": -3}, "jitter_correlation"),
        ({"drift": (1.0,)}, "drift"),
        ({"drift": 3.0}, "drift"),
        ({"drift": (np.nan, 0)}, "drift"),
        ({"drift": ("a", 0)}, "drift"),
        ({"slow_pixel_attenuation": 1.5}, "slow_pixel_attenuation"),
        ({"slow_pixel_attenuation": -0.1}, "slow_pixel_attenuation"),
    ],
)
def test_noise_model_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseModel(**kwargs)


def test_noise_model_coerce():
    assert NoiseModel.coerce(None) == NoiseModel()
    m = NoiseModel(dose=100, drift=[1, 2])
    assert NoiseModel.coerce(m) is m
    assert m.drift == (1.0, 2.0)
    assert NoiseModel.coerce({"dose": 100, "drift": (1, 2)}) == m
    assert NoiseModel.coerce(m.as_dict()) == m
    with pytest.raises(ValueError, match=r"unknown noise parameter.*\['shot'\]"):
        NoiseModel.coerce({"dose": 10, "shot": 1})
    with pytest.raises(TypeError, match="noise must be"):
        NoiseModel.coerce(0.5)


def test_noise_model_is_clean():
    assert NoiseModel().is_clean
    assert NoiseModel(jitter_correlation=10).is_clean  # no jitter: the correlation has no effect
    for kwargs in ({"dose": 10}, {"detector_sigma": 0.1}, {"position_jitter": 0.1}, {"line_jitter": 0.1},
                   {"drift": (0, 1)}, {"slow_pixel_attenuation": 0.2}):
        assert not NoiseModel(**kwargs).is_clean
