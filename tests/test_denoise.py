"""Denoising: noise model, classical filters, network, self-supervised fine-tuning."""

import hyperspy.api as hs
import numpy as np
import pytest
import torch

import hyperspy_partialscan as ps
from hyperspy_partialscan.denoising import denoise, fit_denoiser
from hyperspy_partialscan.metrics import psnr
from hyperspy_partialscan.models import load_model, save_model
from hyperspy_partialscan.models.networks import DenoisingUNet
from hyperspy_partialscan.noise import FrameNoise, degrade, estimate_noise_model, estimate_sigma
from hyperspy_partialscan.specimens import nanoparticle_field


@pytest.fixture(scope="module")
def small_denoiser(tmp_path_factory):
    torch.manual_seed(0)
    net = DenoisingUNet(width=4)
    with torch.no_grad():
        net.out.weight.normal_(0, 0.05)
    return save_model(net, tmp_path_factory.mktemp("dn") / "dn.safetensors", task="denoising",
                      architecture="DenoisingUNet")


@pytest.fixture(scope="module")
def clean():
    frames = np.stack([nanoparticle_field((64, 80), seed=i) for i in range(4)])
    return frames / frames.max()


@pytest.fixture(scope="module")
def noisy_signal(clean):
    noisy = np.stack([degrade(c, FrameNoise(dose=30), i) for i, c in enumerate(clean)])
    s = hs.signals.Signal2D(noisy)
    s.axes_manager[-1].scale = 0.5
    s.axes_manager[-1].units = "nm"
    s.metadata.General.title = "noisy"
    s.original_metadata.set_item("Microscope.voltage", 200)
    return s


def test_poisson_statistics():
    frame = np.full((200, 200), 0.5, np.float32)
    frame[0, 0] = 1.0  # full scale = 1
    out = degrade(frame, FrameNoise(dose=40), 0)
    counts = out[1:, 1:] * 40
    assert abs(counts.mean() - 20) < 0.3
    assert abs(counts.var() / counts.mean() - 1) < 0.05


def test_detector_noise_and_estimate():
    frame = np.zeros((256, 256), np.float32)
    frame[0, 0] = 1.0
    out = degrade(frame, FrameNoise(detector_sigma=0.05), 1)
    assert abs(out[1:, 1:].std() - 0.05) < 0.003
    assert abs(estimate_sigma(out) - 0.05) < 0.005


@pytest.mark.parametrize("dose", [10, 50, 200])
def test_blind_noise_model_recovers_poisson_gain(dose):
    clean = nanoparticle_field((384, 384), seed=3)
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    gain, offset = estimate_noise_model(degrade(clean, FrameNoise(dose=dose), 7))
    assert gain == pytest.approx(1 / dose, rel=0.15)  # variance = signal / dose
    assert abs(offset) < 0.1 / dose


def test_blind_noise_model_of_constant_noise():
    clean = nanoparticle_field((256, 256), seed=4) * 0.5 + 0.2
    noisy = degrade(clean, FrameNoise(detector_sigma=0.04), 1)  # sigma: 0.04 of the maximum
    truth = 0.04 * clean.max()
    assert np.std(noisy - clean) == pytest.approx(truth, rel=0.02)
    gain, offset = estimate_noise_model(noisy)
    for level in (clean.min(), clean.mean(), clean.max()):  # the same sigma at every level
        assert np.sqrt(gain * level + offset) == pytest.approx(truth, rel=0.12)


def test_streaks_and_jitter_change_lines():
    frame = np.tile(np.linspace(0, 1, 128, dtype=np.float32), (128, 1))
    jit = degrade(frame, FrameNoise(line_jitter=2.0), 2)
    shifts = [np.argmin(np.abs(row - 0.5)) for row in jit]
    assert np.std(shifts) > 0.5  # lines are displaced horizontally
    streak = degrade(frame, FrameNoise(streak_sigma=0.1), 3)
    ratio = streak[:, 64] / frame[:, 64]
    assert np.std(ratio) > 0.05 and np.allclose(streak[5] / streak[5, 64], frame[5] / frame[5, 64], atol=1e-5)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("method", ["gaussian", "nl_means", "tv", "pca", "generator"])
def test_denoise_methods_keep_axes_metadata(noisy_signal, clean, small_denoiser, lazy, method):
    s = noisy_signal.as_lazy() if lazy else noisy_signal.deepcopy()
    kwargs = {"model": small_denoiser} if method == "generator" else {}
    out = denoise(s, method, show_progressbar=False, **kwargs)
    data = out.data.compute() if out._lazy else out.data
    assert out._lazy == lazy
    assert data.shape == clean.shape and np.isfinite(data).all()
    assert out.axes_manager[-1].scale == 0.5 and out.axes_manager[-1].units == "nm"
    assert out.original_metadata.Microscope.voltage == 200
    assert out.metadata.General.title == "Denoised noisy"
    assert out.metadata.Signal.Denoising.method == method
    if method in ("gaussian", "nl_means", "tv"):
        assert psnr(data, clean) > psnr(noisy_signal.data, clean)


def test_batch_equals_per_frame(noisy_signal, small_denoiser):
    a = denoise(noisy_signal, model=small_denoiser, navigation_chunks=4, show_progressbar=False).data
    b = denoise(noisy_signal, model=small_denoiser, navigation_chunks=1, show_progressbar=False).data
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("lazy", [False, True])
def test_inplace_records_and_drops_stale_variance(noisy_signal, small_denoiser, lazy):
    s = noisy_signal.as_lazy() if lazy else noisy_signal.deepcopy()
    s.metadata.set_item("Signal.Noise_properties.variance", 0.1)
    expected = denoise(s, model=small_denoiser, show_progressbar=False)
    assert denoise(s, model=small_denoiser, inplace=True, show_progressbar=False) is None
    assert s._lazy == lazy and s.metadata.General.title == "Denoised noisy"
    assert s.metadata.Signal.Denoising.method == "generator"
    assert not s.metadata.has_item("Signal.Noise_properties.variance")
    got = s.data.compute() if lazy else s.data
    want = expected.data.compute() if lazy else expected.data
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="cannot change laziness"):
        denoise(s, model=small_denoiser, inplace=True, lazy_output=not lazy)


def test_large_frame_tiled(small_denoiser):
    frame = nanoparticle_field((600, 540), seed=5)
    s = hs.signals.Signal2D(degrade(frame, FrameNoise(dose=50), 0))
    out = denoise(s, model=small_denoiser, show_progressbar=False)
    assert out.data.shape == (600, 540) and np.isfinite(out.data).all()


def test_variance_model_from_metadata_used(noisy_signal, small_denoiser):
    s = noisy_signal.deepcopy()
    s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 1 / 30)
    s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset", 0.0)
    out = denoise(s, model=small_denoiser, show_progressbar=False)
    assert out.metadata.Signal.Denoising.noise_level == "variance model"
    blind = denoise(noisy_signal, model=small_denoiser, show_progressbar=False)
    assert blind.metadata.Signal.Denoising.noise_level == "blind"


def test_compose_with_completion(noisy_signal, small_denoiser):
    p = ps.to_partial_scan(noisy_signal, "random", 0.3, seed=0, show_progressbar=False)
    with pytest.raises(ValueError, match="complete it first"):
        p.denoise(model=small_denoiser, show_progressbar=False)
    d = denoise(p.complete_partial_scan("linear", show_progressbar=False), model=small_denoiser, show_progressbar=False)
    assert np.isfinite(d.data).all()
    assert "Completion" in d.metadata.Signal.Partial_scan and d.metadata.Signal.Denoising.method == "generator"


def test_bad_inputs_fail_clearly(noisy_signal, small_denoiser, tmp_path):
    before = noisy_signal.data.copy()
    with pytest.raises(ValueError, match="unknown denoising method"):
        denoise(noisy_signal, "median")
    with pytest.raises(TypeError, match="complex"):
        denoise(hs.signals.ComplexSignal2D(noisy_signal.data.astype(complex)))
    nan = noisy_signal.deepcopy()
    nan.data[1] = np.nan
    with pytest.raises(ValueError, match="all NaN"):
        denoise(nan, "gaussian")
    # a completion model is not a denoising model
    from hyperspy_partialscan.models.networks import PartialScanGenerator

    comp = save_model(PartialScanGenerator(width=8, inner_blocks=1, outer_blocks=1), tmp_path / "c.safetensors",
                      task="completion", architecture="PartialScanGenerator")
    with pytest.raises(ValueError, match="not a denoising model"):
        denoise(noisy_signal, model=comp)
    with pytest.raises(ValueError, match="2 signal dimensions"):
        denoise(hs.signals.Signal1D(np.zeros((3, 10))))
    with pytest.raises(ValueError, match="stack"):
        denoise(noisy_signal.inav[0], "pca")
    np.testing.assert_array_equal(noisy_signal.data, before)


def _blind_spot_loss(model, signal):
    """Blind-spot loss of a model on fixed masks of the signal (lower = better fit)."""
    from hyperspy_partialscan.models.features import denoising_inputs

    x, _ = denoising_inputs(signal.data)
    rng = np.random.default_rng(5)
    mask = rng.uniform(size=x[:, :1].shape) < 0.05
    xin = x.copy()
    n, c, yy, xx = np.nonzero(mask)
    xin[n, 0, yy, xx] = x[n, 0, np.clip(yy + 1, 0, x.shape[2] - 1), xx]
    with torch.no_grad():
        y = model.network(torch.from_numpy(xin)).numpy()
    return float(((y - x[:, :1]) ** 2)[mask].mean())


def _noise2noise_loss(model, signal):
    """Mean squared difference between the model's output for one exposure and the next exposure."""
    from hyperspy_partialscan.models.features import denoising_inputs

    x, _ = denoising_inputs(signal.data)
    with torch.no_grad():
        y = model.network(torch.from_numpy(x)).numpy()
    return float(((y[:-1] - x[1:, :1]) ** 2).mean())


@pytest.mark.parametrize("method", ["blind_spot", "noise2noise"])
def test_fit_denoiser_lowers_loss(noisy_signal, clean, small_denoiser, method, tmp_path):
    if method == "noise2noise":  # repeated exposures of one field
        rep = np.stack([degrade(clean[0], FrameNoise(dose=30), 10 + i) for i in range(4)])
        signal, loss = hs.signals.Signal2D(rep), _noise2noise_loss
    else:
        signal, loss = noisy_signal, _blind_spot_loss
    start = load_model(small_denoiser)
    model = fit_denoiser(signal, init=small_denoiser, epochs=30, method=method, batch_size=4, crop=48,
                         lr=2e-3, keep_best=False, output=tmp_path / "mine", show_progressbar=False)
    assert model.task == "denoising" and (tmp_path / "mine.safetensors").exists()
    assert model.config["training"]["self_supervised"] == method
    assert loss(model, signal) < loss(start, signal)
    # usable by denoise and loadable again from disk
    out = denoise(signal, model=tmp_path / "mine.safetensors", show_progressbar=False)
    assert np.isfinite(out.data).all()


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


def test_fit_denoiser_sure_lowers_the_true_error(noisy_signal, clean, small_denoiser, tmp_path):
    start = load_model(small_denoiser)
    model = fit_denoiser(noisy_signal, init=small_denoiser, epochs=30, method="sure", batch_size=4, crop=48,
                         lr=2e-3, output=tmp_path / "mine", show_progressbar=False)
    tr = model.config["training"]
    assert tr["self_supervised"] == "sure" and tr["noise_level"] == "blind"
    assert tr["sure_best"] < tr["sure_start"] and len(tr["sure_per_epoch"]) == 31

    def error(m):  # against the clean frames, which the fit never saw
        out = denoise(noisy_signal, model=m, show_progressbar=False).data
        return float(np.mean((out - clean) ** 2))

    assert error(model) < 0.92 * error(start)


def test_fit_denoiser_keeps_the_starting_weights_when_fitting_does_not_help(noisy_signal, small_denoiser, tmp_path):
    start = load_model(small_denoiser)
    kw = dict(init=small_denoiser, epochs=2, method="blind_spot", batch_size=4, crop=48, lr=0.5,
              show_progressbar=False)  # a learning rate that wrecks the network
    kept = fit_denoiser(noisy_signal, output=tmp_path / "kept", **kw)
    last = fit_denoiser(noisy_signal, output=tmp_path / "last", keep_best=False, **kw)
    assert kept.config["training"]["best_epoch"] == 0
    for k, v in start.network.state_dict().items():
        assert torch.equal(kept.network.state_dict()[k], v)
    assert any(not torch.equal(last.network.state_dict()[k], v) for k, v in start.network.state_dict().items())


def test_fit_denoiser_uses_the_known_noise_model(noisy_signal, small_denoiser, tmp_path):
    s = noisy_signal.deepcopy()
    s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 1 / 30)
    s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset", 0.0)
    kw = dict(init=small_denoiser, epochs=1, method="sure", batch_size=4, crop=48, show_progressbar=False)
    assert fit_denoiser(s, output=tmp_path / "a", **kw).config["training"]["noise_level"] == "variance model"
    given = fit_denoiser(noisy_signal, sigma=0.05, output=tmp_path / "b", **kw)
    assert given.config["training"]["noise_level"] == "given sigma"


def test_fit_denoiser_bad_inputs(noisy_signal, small_denoiser):
    with pytest.raises(ValueError, match="unknown self-supervised"):
        fit_denoiser(noisy_signal, init=small_denoiser, method="magic")
    with pytest.raises(ValueError, match="sigma must be a positive"):
        fit_denoiser(noisy_signal, init=small_denoiser, method="sure", sigma=-1.0)
    with pytest.raises(ValueError, match="at least two"):
        fit_denoiser(noisy_signal.inav[0], init=small_denoiser, method="noise2noise")


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
