"""Denoising: noise model, classical filters, network, self-supervised fine-tuning."""

import re

import hyperspy.api as hs
import numpy as np
import pytest
import torch

import hyperspy_partialscan as ps
from hyperspy_partialscan.denoising import denoise, fit_denoiser
from hyperspy_partialscan.metrics import psnr
from hyperspy_partialscan.models import load_model, save_model
from hyperspy_partialscan.noise import FrameNoise, degrade, estimate_noise_model, estimate_sigma
from hyperspy_partialscan.specimens import nanoparticle_field


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
@pytest.mark.parametrize("method", ["gaussian", "nl_means", "tv", "wiener", "pca", "generator"])
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
    if method in ("gaussian", "nl_means", "tv", "wiener"):
        assert psnr(data, clean) > psnr(noisy_signal.data, clean)


def test_wiener_filter_resolves_a_shot_noise_lattice_better_than_the_other_filters():
    from hyperspy_partialscan.filters import gaussian_filter, tv, wiener
    from hyperspy_partialscan.specimens import atomic_lattice

    clean = atomic_lattice((192, 192), seed=3)
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    dose = 50
    noisy = np.random.default_rng(0).poisson(clean * dose).astype(np.float32) / dose
    scores = {f.__name__: psnr(f(noisy), clean) for f in (gaussian_filter, tv, wiener)}
    assert scores["wiener"] > max(scores["gaussian_filter"], scores["tv"]) + 1.0, scores
    # the known Poisson model (variance = signal / dose) gives the same as the blind estimate, within a little
    known = psnr(wiener(noisy, variance_model=(1 / dose, 0.0)), clean)
    assert abs(known - scores["wiener"]) < 0.5
    assert wiener(noisy).dtype == np.float32 and np.array_equal(noisy, np.random.default_rng(0).poisson(
        clean * dose).astype(np.float32) / dose)  # the input is not changed


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


@pytest.mark.parametrize("call", ["denoise_pca_lazy", "denoise_gaussian", "fit_denoiser"])
def test_a_frame_with_nan_is_named(noisy_signal, small_denoiser, call):
    """The first frame with NaN is named, whether the stack is checked up front, after loading, or before fitting."""
    s = noisy_signal.deepcopy()
    s.data[2, 5, 5] = np.nan
    run = {"denoise_pca_lazy": lambda: denoise(s.as_lazy(), "pca", lazy_output=False),
           "denoise_gaussian": lambda: denoise(s, "gaussian"),
           "fit_denoiser": lambda: fit_denoiser(s, init=small_denoiser, epochs=1)}[call]
    with pytest.raises(ValueError, match="^frame 2 has NaN or infinite pixels"):
        run()


@pytest.mark.parametrize("method, kwargs, fragment", [
    ("gaussian", {"sigma": 2.0}, "sigma= is only used by method='generator', not 'gaussian'"),
    ("wiener", {"noise_estimate": "stack"}, "noise_estimate= is only used by method='generator'"),
    ("tv", {"model": "default", "network_batch_size": 2}, "model= and network_batch_size= are only used"),
    ("gaussian", {"n_components": 2}, "n_components= is only used by method='pca'"),
    ("generator", {"h": 0.3}, "h= is a parameter of the classical filters, not used by method='generator'"),
    ("pca", {"filter_sigma": 1.0, "weight": 2}, "filter_sigma= and weight= are parameters of the classical"),
])
def test_arguments_of_another_method_are_refused(noisy_signal, method, kwargs, fragment):
    """An argument the chosen method would ignore is an error, not silently dropped."""
    before = noisy_signal.data.copy()
    with pytest.raises(ValueError, match=re.escape(fragment)):
        denoise(noisy_signal, method, **kwargs)
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


def test_fit_denoiser_pure_lowers_the_true_error(noisy_signal, clean, small_denoiser, tmp_path):
    s = noisy_signal.deepcopy()  # the dose known: Poisson variance = signal / 30
    s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 1 / 30)
    s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset", 0.0)
    start = load_model(small_denoiser)
    model = fit_denoiser(s, init=small_denoiser, epochs=30, method="pure", batch_size=4, crop=48,
                         lr=2e-3, output=tmp_path / "mine", show_progressbar=False)
    tr = model.config["training"]
    assert tr["self_supervised"] == "pure" and tr["noise_level"] == "variance model"
    assert tr["pure_best"] < tr["pure_start"] and len(tr["pure_per_epoch"]) == 31 and "sure_best" not in tr

    def error(m):  # against the clean frames, which the fit never saw
        out = denoise(s, model=m, show_progressbar=False).data
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
    for kwargs, message in [({"sigma": -1.0}, "sigma must be a finite number > 0"),
                            ({"sigma": "a"}, "sigma must be a finite number > 0"),
                            ({"epochs": 0}, "epochs must be an integer >= 1"),
                            ({"batch_size": 0}, "batch_size must be an integer >= 1"),
                            ({"crop": 8}, "crop must be an integer >= 16"),
                            ({"lr": 0}, "lr must be a finite number > 0"),
                            ({"seed": -1}, "seed must be in")]:
        with pytest.raises(ValueError, match=f"^{message}"):
            fit_denoiser(noisy_signal, init=small_denoiser, method="sure", **kwargs)
    with pytest.raises(ValueError, match="at least two"):
        fit_denoiser(noisy_signal.inav[0], init=small_denoiser, method="noise2noise")
    silent = noisy_signal.deepcopy()  # a variance model without noise: nothing for PURE to estimate
    silent.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 0.0)
    silent.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset", 0.0)
    with pytest.raises(ValueError, match="^noise: gain and gain_offset must be >= 0 and not both 0"):
        fit_denoiser(silent, init=small_denoiser, method="pure", epochs=1, crop=48, show_progressbar=False)


def test_fit_denoiser_pure_with_a_blind_estimate_or_a_given_sigma(noisy_signal, small_denoiser, tmp_path):
    kw = dict(init=small_denoiser, epochs=1, method="pure", batch_size=4, crop=48, show_progressbar=False)
    blind = fit_denoiser(noisy_signal, output=tmp_path / "a", **kw).config["training"]
    assert blind["noise_level"] == "blind" and np.isfinite(blind["pure_best"])
    given = fit_denoiser(noisy_signal, sigma=0.05, output=tmp_path / "b", **kw).config["training"]
    assert given["noise_level"] == "given sigma" and np.isfinite(given["pure_best"])




def test_blind_estimate_per_frame_recorded(noisy_signal, small_denoiser):
    stack = hs.signals.Signal2D(noisy_signal.data.reshape((2, 2) + noisy_signal.data.shape[1:]))
    before = stack.data.copy()
    rec = denoise(stack, model=small_denoiser, show_progressbar=False).metadata.Signal.Denoising
    assert rec.noise_level == "blind" and rec.noise_estimate == "frame"
    gains = rec.variance_model.gain_factor
    assert gains.shape == (2, 2) and np.all(np.abs(gains * 30 - 1) < 0.5)  # Poisson noise at 30 e-/px
    np.testing.assert_array_equal(stack.data, before)
    shared = denoise(stack, model=small_denoiser, noise_estimate="stack", show_progressbar=False)
    model = shared.metadata.Signal.Denoising.variance_model
    assert isinstance(model.gain_factor, float) and abs(model.gain_factor * 30 - 1) < 0.3
    lazy = denoise(stack.as_lazy(), model=small_denoiser, show_progressbar=False)
    assert "not recorded" in lazy.metadata.Signal.Denoising.variance_model
    np.testing.assert_allclose(np.asarray(lazy.data), denoise(stack, model=small_denoiser,
                                                              show_progressbar=False).data, atol=1e-5)
    with pytest.raises(ValueError, match="noise_estimate"):
        denoise(stack, model=small_denoiser, noise_estimate="global", show_progressbar=False)


def test_stack_estimate_is_shared_and_differs_from_frames(noisy_signal, small_denoiser):
    s = noisy_signal.deepcopy()
    s.data[1] = s.data[1] * 0.2  # a frame at another scale: its own estimate differs from the stack's
    per_frame = denoise(s, model=small_denoiser, show_progressbar=False)
    shared = denoise(s, model=small_denoiser, noise_estimate="stack", show_progressbar=False)
    assert not np.allclose(per_frame.data[1], shared.data[1])
    np.testing.assert_allclose(per_frame.metadata.Signal.Denoising.variance_model.gain_factor[1] / 0.2,
                               per_frame.metadata.Signal.Denoising.variance_model.gain_factor[0], rtol=0.5)


def test_simulated_dose_of_a_partial_scan_used(clean, small_denoiser):
    signal = hs.signals.Signal2D(clean[:2] * 100)
    p = ps.to_partial_scan(signal, "random", 0.5, seed=0, noise={"dose": 40}, show_progressbar=False)
    done = p.complete_partial_scan("linear", show_progressbar=False)
    rec = denoise(done, model=small_denoiser, show_progressbar=False).metadata.Signal.Denoising
    assert rec.noise_level == "simulation"
    full = np.nanmax(done.data.reshape(2, -1), axis=1)
    np.testing.assert_allclose(rec.variance_model.gain_factor, full / 40, rtol=1e-5)  # variance = full * signal / dose
