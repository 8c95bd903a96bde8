"""Training of the denoiser: crop sampler, SURE, supervised training and fine-tuning."""

import numpy as np
import pytest
import torch

from hyperspy_partialscan.models import load_model


class _Box(torch.nn.Module):
    """A box filter on the image channel: a denoiser whose error is easy to compute exactly."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        w = torch.ones(1, 1, self.k, self.k) / self.k**2
        return torch.nn.functional.conv2d(x[:, :1], w, padding=self.k // 2)


def test_sure_estimates_the_error_against_the_clean_frame():
    from hyperspy_partialscan.models.features import NOISE_MAP_GAIN
    from hyperspy_partialscan.training import sure_per_item

    gen = torch.Generator().manual_seed(0)
    yy, xx = np.mgrid[:128, :128]
    clean = torch.tensor((0.5 + 0.3 * np.sin(xx / 6) * np.cos(yy / 9)).astype(np.float32))
    clean = clean[None, None].repeat(4, 1, 1, 1)
    sd = 0.05 + 0.1 * clean  # signal-dependent, as shot noise
    x = torch.cat([clean + sd * torch.randn(clean.shape, generator=gen), NOISE_MAP_GAIN * sd], 1)
    estimates, truths = [], []
    for k in (1, 3, 5, 9):
        estimates.append(float(sure_per_item(_Box(k), x).mean()))
        truths.append(float(((_Box(k)(x) - clean) ** 2).mean()))
    np.testing.assert_allclose(estimates, truths, rtol=0.08)
    assert np.argmin(estimates) == np.argmin(truths) != 0  # it picks the best filter, not the identity


def test_noisy_crop_sampler_inverts_contrast(clean):
    from hyperspy_partialscan.training import NoisyCropSampler

    frames = [c * 0.2 for c in clean]  # dark-field-like: mostly dark
    mean = lambda s: np.mean([s.pair()[1].mean() for _ in range(40)])  # noqa: E731
    never = NoisyCropSampler(frames, crop=32, rng=0, invert=0.0)
    always = NoisyCropSampler(frames, crop=32, rng=0, invert=1.0)
    m0, m1 = mean(never), mean(always)
    assert m0 < 0.5 < m1 and m1 == pytest.approx(1 - m0, abs=0.1)
    with pytest.raises(ValueError, match="invert"):
        NoisyCropSampler(frames, crop=32, invert=1.5)


def test_train_denoiser_fine_tunes_from_init(clean, small_denoiser, tmp_path):
    from hyperspy_partialscan.training import NoisyCropSampler, mse_per_item, train_denoiser

    start = load_model(small_denoiser)
    path = train_denoiser(list(clean), tmp_path / "run", iterations=25, batch_size=4, crop=48, lr=2e-3,
                          init=small_denoiser, invert=0.5, show_progressbar=False, name="ft")
    model = load_model(path)
    assert model.config["network"] == start.config["network"]  # the starting architecture is kept
    assert model.config["training"]["init"]["sha256"] == start.sha256
    batch = NoisyCropSampler(list(clean), crop=48, rng=7, invert=0.5).batch(16)
    with torch.no_grad():
        assert float(mse_per_item(model.network, batch).mean()) < float(mse_per_item(start.network, batch).mean())


def test_noisy_crop_sampler_dose_range(clean):
    from hyperspy_partialscan.training import NoisyCropSampler

    sampler = NoisyCropSampler(list(clean), crop=32, dose_range=(8.0, 12.0), rng=0)
    doses = [sampler.pair()[2].dose for _ in range(30)]
    assert min(doses) >= 8.0 and max(doses) <= 12.0 and np.ptp(doses) > 1
    for bad in [(0.0, 10.0), (50.0, 10.0)]:
        with pytest.raises(ValueError, match="dose_range"):
            NoisyCropSampler(list(clean), crop=32, dose_range=bad)


def test_noisy_crop_sampler_normalises_over_a_context_window():
    from hyperspy_partialscan.training import NoisyCropSampler

    rng = np.random.default_rng(0)
    frame = (0.8 + 0.01 * rng.standard_normal((64, 64))).astype(np.float32)  # flat, faintly noisy background
    frame[:6, :6] = 0.0  # one dark feature sets the frame's range
    ptp = lambda s: [np.ptp(s.pair()[1]) for _ in range(30)]  # noqa: E731
    own = ptp(NoisyCropSampler([frame], crop=16, rng=1, context=1))
    ctx = ptp(NoisyCropSampler([frame], crop=16, rng=1, context=4))
    np.testing.assert_allclose(own, 1.0, atol=1e-5)  # each crop stretched to full scale: noise becomes "structure"
    assert np.median(ctx) < 0.2  # within the frame's range a flat crop stays flat
    with pytest.raises(ValueError, match="context"):
        NoisyCropSampler([frame], crop=16, context=0)

