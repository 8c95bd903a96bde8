"""The blind noise-level estimators of noise.py (Poisson-Gaussian model, white-noise floor)."""

import numpy as np
import pytest

from hyperspy_partialscan.noise import FrameNoise, degrade, estimate_noise_model, white_noise_variance
from hyperspy_partialscan.specimens import atomic_lattice


def _lattice(shape, spacing, seed):
    x = atomic_lattice(shape, spacing=spacing, seed=seed)
    return (x - x.min()) / (x.max() - x.min())


@pytest.mark.parametrize("dose", [10, 50, 200])
@pytest.mark.parametrize("spacing", [6.0, 12.0])
def test_gain_of_poisson_noise_on_a_lattice(dose, spacing):
    # a 256² frame filled with a lattice: the variance model at the frame's mean level is 1 / dose of it
    clean = _lattice((256, 256), spacing, seed=2)
    gain, offset = estimate_noise_model(degrade(clean, FrameNoise(dose=dose), 3))
    mean = clean.mean()
    assert (gain * mean + offset) * dose / mean == pytest.approx(1.0, rel=0.12)
    assert gain * dose == pytest.approx(1.0, rel=0.3)


def test_dense_lattice_at_high_dose_does_not_inflate_the_estimate():
    # structure everywhere, noise small against it: the bins' MAD alone gave 1.5 x the gain here
    clean = _lattice((256, 256), 6.0, seed=2)
    gain, offset = estimate_noise_model(degrade(clean, FrameNoise(dose=1000), 1))
    assert (gain * clean.mean() + offset) * 1000 / clean.mean() == pytest.approx(1.0, rel=0.15)


def test_low_counts_on_a_sparse_lattice():
    # ~0.8 counts per pixel on average at dose 10: the MAD of discrete counts alone under-estimated by ~25 %
    clean = _lattice((256, 256), 12.0, seed=2)
    gain, offset = estimate_noise_model(degrade(clean, FrameNoise(dose=10), 1))
    assert (gain * clean.mean() + offset) * 10 / clean.mean() == pytest.approx(1.0, rel=0.1)


def test_flat_frame_and_vacuum():
    rng = np.random.default_rng(0)
    flat = rng.poisson(40.0, (128, 128)).astype(float)  # a flat area: variance 40 at level 40
    gain, offset = estimate_noise_model(flat)
    assert gain * 40 + offset == pytest.approx(40, rel=0.1)
    vacuum = rng.normal(0, 0.02, (128, 128))  # no signal, detector noise only
    gain, offset = estimate_noise_model(vacuum)
    assert np.sqrt(max(offset, 0) + gain * max(vacuum.mean(), 0)) == pytest.approx(0.02, rel=0.1)


def test_white_noise_variance_pools_a_stack_and_declines_tiny_frames():
    rng = np.random.default_rng(1)
    stack = _lattice((64, 64), 8.0, seed=0)[None] + rng.normal(0, 0.05, (6, 64, 64))
    assert white_noise_variance(stack) == pytest.approx(0.05**2, rel=0.1)
    assert white_noise_variance(rng.normal(size=(12, 12))) is None
    gain, offset = estimate_noise_model(rng.normal(0, 0.1, (12, 12)))  # falls back to the fit alone
    assert np.isfinite([gain, offset]).all()


def test_estimate_rejects_bad_frames():
    with pytest.raises(ValueError, match="too small"):
        estimate_noise_model(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="too small"):
        estimate_noise_model(np.zeros(8))
