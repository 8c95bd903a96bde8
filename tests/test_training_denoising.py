"""Training of the denoiser: crop sampler, SURE and PURE, supervised training and fine-tuning."""

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


def _atom_columns(shape=(128, 128), spacing=8, width=1.2, peak=9.0, background=0.5):
    """Expected counts of a lattice of sharp atom columns: 0.5 counts between them, 9.5 on them."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    rows, cols = range(spacing // 2, shape[0], spacing), range(spacing // 2, shape[1], spacing)
    centres = [(cy, cx) for cy in rows for cx in cols]
    return background + sum(peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2)) for cy, cx in centres)


class _KeepWhere(torch.nn.Module):
    """A linear, spatially varying denoiser: keeps the pixels of ``keep``, 5x5 box average elsewhere."""

    def __init__(self, keep):
        super().__init__()
        self.keep = torch.as_tensor(keep, dtype=torch.float32)[None, None]

    def forward(self, x):
        y = x[:, :1]
        return self.keep * y + (1 - self.keep) * torch.nn.functional.avg_pool2d(y, 5, 1, 2, count_include_pad=False)


def test_pure_estimates_the_error_of_a_linear_denoiser_where_sure_does_not():
    """At 0.5-9.5 counts per pixel (dark level 20), PURE averaged over 32 draws is within 5 % of the true error.

    The denoiser keeps the noise on the atom columns, where SURE's variance (from
    a smoothed frame) is far too low, as a network fitted with SURE learns to.
    """
    from hyperspy_partialscan.models.features import denoising_inputs, normalised_noise
    from hyperspy_partialscan.training import pure_per_item, sure_per_item

    lam = _atom_columns()
    model = {"gain_factor": 1.0, "gain_offset": 0.0, "offset": 20.0}  # counts on a dark level of 20
    frames = (20 + np.random.default_rng(0).poisson(lam, (32,) + lam.shape)).astype(np.float32)
    x, scales = denoising_inputs(frames, model)
    clean = torch.from_numpy(np.stack([(20 + lam - lo) / s for lo, s in scales]).astype(np.float32))[:, None]
    noise = torch.tensor([normalised_noise(lo, s, model) for lo, s in scales], dtype=torch.float32)
    net, x = _KeepWhere(lam > 3), torch.from_numpy(x)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        truth = float(((net(x) - clean) ** 2).mean())
        pure = float(pure_per_item(net, x, noise[:, 0], noise[:, 1], noise[:, 2],  # a dense probe: less
                                   torch.rand(x[:, :1].shape, generator=gen), fraction=0.1).mean())  # MC noise
        sure = float(sure_per_item(net, x, torch.randn(x[:, :1].shape, generator=gen)).mean())
    assert pure == pytest.approx(truth, rel=0.05)
    assert abs(sure / truth - 1) > 0.3 > 6 * abs(pure / truth - 1)


@pytest.mark.parametrize("threshold", [0.45, 0.55])
def test_pure_finite_differences_beat_the_first_order_estimate_on_a_threshold(threshold):
    """A hard threshold at 2-10 counts: one-count differences see its jump, derivatives (SURE, variance a z) do not."""
    from hyperspy_partialscan.models.features import NOISE_MAP_GAIN
    from hyperspy_partialscan.training import pure_per_item, sure_per_item

    a = 0.1  # one count in normalised units
    lam = torch.linspace(2, 10, 128).repeat(32, 1, 128, 1)
    y = a * torch.poisson(lam, generator=torch.Generator().manual_seed(2))
    net = lambda x: x[:, :1] * (x[:, :1] > threshold)  # noqa: E731
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        truth = float(((net(y) - a * lam) ** 2).mean())
        pure = float(pure_per_item(net, torch.cat([y, torch.zeros_like(y)], 1), a,
                                   probe=torch.rand(y.shape, generator=gen), fraction=0.1).mean())
        first_order = torch.cat([y, NOISE_MAP_GAIN * (a * y).sqrt()], 1)  # SURE with variance a z, at z
        first = float(sure_per_item(net, first_order, torch.randn(y.shape, generator=gen)).mean())
    assert pure == pytest.approx(truth, rel=0.03)
    assert abs(first / truth - 1) > 0.2 > 6 * abs(pure / truth - 1)


def test_pure_perturbs_the_noise_level_channel_as_the_frame():
    """A network reading only the noise-level channel: its one-count differences come from the map alone."""
    from hyperspy_partialscan.models.features import denoising_inputs, normalised_noise
    from hyperspy_partialscan.training import pure_per_item

    frames = np.random.default_rng(4).poisson(5.0, (2, 64, 64)).astype(np.float32)
    model = {"gain_factor": 1.0, "gain_offset": 0.0}
    x, scales = denoising_inputs(frames, model)
    noise = torch.tensor([normalised_noise(lo, s, model) for lo, s in scales], dtype=torch.float32)
    x = torch.from_numpy(x)
    net = lambda t: t[:, 1:]  # noqa: E731
    probe = torch.rand(x[:, :1].shape, generator=torch.Generator().manual_seed(0))
    moved = pure_per_item(net, x, noise[:, 0], noise[:, 1], noise[:, 2], probe)
    fixed = ((x[:, 1:] - x[:, :1]) ** 2 - noise[:, 0, None, None, None] * (x[:, :1] - noise[:, 1, None, None, None]))
    assert not torch.allclose(moved, fixed.mean(dim=(1, 2, 3)))  # the map's change is seen


def test_pure_bad_parameters():
    from hyperspy_partialscan.training import pure_per_item

    x, net = torch.zeros(2, 2, 8, 8), lambda t: t[:, :1]  # noqa: E731
    with pytest.raises(ValueError, match="^gain must be >= 0"):
        pure_per_item(net, x, -0.1)
    with pytest.raises(ValueError, match="^gain_offset must be finite"):
        pure_per_item(net, x, 0.1, gain_offset=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="^offset must be finite"):
        pure_per_item(net, x, 0.1, offset=float("nan"))
    with pytest.raises(ValueError, match="^fraction must be in"):
        pure_per_item(net, x, 0.1, fraction=1.0)


def test_fit_self_supervised_pure_needs_the_noise_model():
    from hyperspy_partialscan.models.features import denoising_inputs
    from hyperspy_partialscan.models.networks import DenoisingUNet
    from hyperspy_partialscan.training import fit_self_supervised

    inputs, _ = denoising_inputs(np.random.default_rng(0).poisson(10, (2, 48, 48)).astype("float32"))
    kw = dict(method="pure", epochs=1, crop=32, show_progressbar=False)
    with pytest.raises(ValueError, match="^noise: method 'pure' needs"):
        fit_self_supervised(DenoisingUNet(width=4), inputs, **kw)
    with pytest.raises(ValueError, match=r"^noise must be finite, shape \(2, 3\)"):
        fit_self_supervised(DenoisingUNet(width=4), inputs, noise=[[0.1, 0.0, 0.0]], **kw)
    with pytest.raises(ValueError, match="^noise: gain and gain_offset"):
        fit_self_supervised(DenoisingUNet(width=4), inputs, noise=np.zeros((2, 3)), **kw)
    out = fit_self_supervised(DenoisingUNet(width=4), inputs, noise=[[0.1, 0.0, 0.0]] * 2, **kw)
    assert set(out) >= {"pure_start", "pure_best", "best_epoch", "pure_per_epoch"} and "sure_start" not in out


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


def test_train_denoiser_resumed_after_it_finished_records_its_iterations(clean, tmp_path):
    """A finished run resumed (nothing left to do) exports the iterations it reached, not 0."""
    from hyperspy_partialscan.training import train_denoiser

    kw = dict(iterations=3, batch_size=2, crop=32, width=4, show_progressbar=False, name="dn")
    first = load_model(train_denoiser(list(clean), tmp_path / "run", **kw))
    again = load_model(train_denoiser(list(clean), tmp_path / "run", resume=True, **kw))
    assert first.config["training"]["iterations"] == again.config["training"]["iterations"] == 3
    assert again.config["package_version"] and "seconds_this_run" in again.config["training"]


def test_export_checkpoint_exports_the_network_the_checkpoint_records(clean, tmp_path):
    """A checkpoint knows its architecture; an older one without that record needs architecture=."""
    from hyperspy_partialscan.training import export_checkpoint, train_denoiser

    final = load_model(train_denoiser(list(clean), tmp_path / "run", iterations=3, batch_size=2, crop=32, width=4,
                                      show_progressbar=False, name="dn"))
    ckpt = tmp_path / "run" / "checkpoint.pt"
    model = load_model(export_checkpoint(ckpt, tmp_path / "interim.safetensors", extra={"interim": True}))
    assert model.task == "denoising" and model.config["interim"] and model.config["training"]["iterations"] == 3
    for k, v in final.network.state_dict().items():
        assert torch.equal(model.network.state_dict()[k], v)
    old = torch.load(ckpt, weights_only=True)
    del old["architecture"]
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="^architecture must be one of PartialScanGenerator, DenoisingUNet"):
        export_checkpoint(tmp_path / "old.pt", tmp_path / "old.safetensors")
    assert load_model(export_checkpoint(tmp_path / "old.pt", tmp_path / "old.safetensors",
                                        architecture="DenoisingUNet")).task == "denoising"


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



def test_noisy_crop_sampler_draws_binned_crops_with_half_the_reference_noise():
    from hyperspy_partialscan.training import NoisyCropSampler

    rng = np.random.default_rng(0)
    frame = (0.5 + 0.05 * rng.standard_normal((128, 128))).astype(np.float32)  # a reference with its own noise
    frame[:8, :8], frame[-8:, -8:] = 0.0, 1.0  # features fixing the intensity range, binned or not
    grain = lambda s: np.median([np.diff(s.pair()[1], axis=1).std() for _ in range(40)])  # noqa: E731
    full = grain(NoisyCropSampler([frame], crop=16, rng=1, context=16))
    binned = grain(NoisyCropSampler([frame], crop=16, rng=1, context=16, bin_fraction=1.0))
    assert binned == pytest.approx(full / 2, rel=0.25)
    with pytest.raises(ValueError, match="bin_fraction"):
        NoisyCropSampler([frame], crop=16, bin_fraction=2.0)
    with pytest.raises(ValueError, match="at least 160x160"):
        NoisyCropSampler([frame], crop=80, bin_fraction=0.5)  # binned to 64², smaller than the crop
