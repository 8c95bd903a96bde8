"""The completion's per-pixel uncertainty: API, one pass, noise sources, calibration lookup, CLI, training."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import hyperspy.api as hs
import numpy as np
import pytest
import torch
from pshelpers import array_of, assert_unchanged, make_signal, snapshot

import hyperspy_partialscan as hp
from hyperspy_partialscan._signal_tools import noise_source
from hyperspy_partialscan.models import save_model
from hyperspy_partialscan.models.networks import PartialScanGenerator
from hyperspy_partialscan.specimens import atomic_lattice, nanoparticle_field
from hyperspy_partialscan.uncertainty import calibration_scale, frame_variance_model

LAZY = [False, True]


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    torch.manual_seed(0)
    net = PartialScanGenerator(width=8, inner_blocks=2, outer_blocks=1)
    return save_model(net, tmp_path_factory.mktemp("gen") / "gen.safetensors", task="completion",
                      architecture="PartialScanGenerator", extra={"note": "test"})


@pytest.fixture(scope="module")
def frames():
    return [nanoparticle_field((128, 128), seed=i) for i in range(3)] + [atomic_lattice((128, 128), 10.0, seed=1)]


@pytest.fixture(scope="module")
def uncertainty_model(generator, frames, tmp_path_factory):
    from hyperspy_partialscan.training import calibrate_uncertainty, train_uncertainty

    run = tmp_path_factory.mktemp("unc")
    path = train_uncertainty(frames, run, generator=generator, iterations=4, batch_size=2, crop=64, width=4,
                             val_frames=frames[:1], show_progressbar=False)
    return calibrate_uncertainty(path, frames, generator=generator, crop=64, per_frame=1)


def test_fine_tuning_at_another_resolution_keeps_the_weights(generator, frames, uncertainty_model, tmp_path):
    from hyperspy_partialscan.models import load_model
    from hyperspy_partialscan.training import train_uncertainty

    path = train_uncertainty(frames, tmp_path / "half", generator=generator, iterations=1, batch_size=2, crop=64,
                             init=uncertainty_model, downscale=2, lr=1e-12, show_progressbar=False)
    half, full = load_model(path, task="uncertainty"), load_model(uncertainty_model, task="uncertainty")
    assert half.config["network"]["downscale"] == 2 and "downscale" not in full.config["network"]
    assert half.config["training"]["init"]["sha256"] == full.sha256
    for key, value in full.network.state_dict().items():  # lr 1e-12: the init's weights, at half resolution
        torch.testing.assert_close(half.network.state_dict()[key], value, atol=1e-6, rtol=0)


def test_crop_level_term_is_recorded_with_the_model(generator, frames, tmp_path):
    from hyperspy_partialscan.models import load_model
    from hyperspy_partialscan.training import train_uncertainty

    path = train_uncertainty(frames, tmp_path / "level", generator=generator, iterations=2, batch_size=2, crop=64,
                             width=4, crop_level_weight=0.5, show_progressbar=False)
    record = load_model(path, task="uncertainty").config["training"]
    assert "plus 0.5 x the squared log ratio of each crop's predicted to actual mean squared error" in record["loss"]
    with pytest.raises(ValueError, match="crop_level_weight"):
        train_uncertainty(frames, tmp_path / "negative", generator=generator, iterations=1, crop_level_weight=-1.0,
                          show_progressbar=False)


def _partial(lazy=False, noise=None):
    s = make_signal((3,), lazy, 64)
    return hp.to_partial_scan(s, "spiral", 0.1, seed=0, noise=noise, show_progressbar=False)


@pytest.mark.parametrize("lazy", LAZY)
def test_completion_and_sigma_from_one_pass(lazy, generator, uncertainty_model):
    p = _partial(lazy)
    snap = snapshot(p)
    done, sigma = hp.complete_partial_scan(p, model=generator, uncertainty=True, uncertainty_model=uncertainty_model,
                                           device="cpu", show_progressbar=False)
    assert_unchanged(p, snap)
    assert done._lazy is lazy and sigma._lazy is lazy
    if lazy:  # one graph: both outputs come from the same block tasks
        layers_c = {k for k in done.data.dask.layers if k.startswith("complete-generator")}
        layers_s = {k for k in sigma.data.dask.layers if k.startswith("complete-generator")}
        assert layers_c and layers_c == layers_s
        c, s = dask.compute(done.data, sigma.data)
    else:
        c, s = done.data, sigma.data
    plain = hp.complete_partial_scan(p, model=generator, device="cpu", show_progressbar=False)
    np.testing.assert_array_equal(np.asarray(c), array_of(plain))  # uncertainty changes nothing in the completion
    assert s.shape == c.shape and s.dtype == np.float32
    assert np.isfinite(s).all() and (s > 0).all()
    assert [(a.scale, a.offset, a.units) for a in sigma.axes_manager._axes] == [
        (a.scale, a.offset, a.units) for a in p.axes_manager._axes]
    assert sigma.metadata.General.title.startswith("Uncertainty (sigma) of completed")
    record = sigma.metadata.Signal.Partial_scan.Completion.uncertainty
    assert "blurred truth" in record.meaning and record.model_sha256
    assert record.calibration.path_family == "spiral"
    assert done.metadata.Signal.Partial_scan.Completion.uncertainty.model == record.model


def test_eager_and_lazy_sigma_agree(generator, uncertainty_model):
    kw = dict(model=generator, uncertainty=True, uncertainty_model=uncertainty_model, device="cpu",
              show_progressbar=False)
    _, eager = hp.complete_partial_scan(_partial(False), **kw)
    _, lazy = hp.complete_partial_scan(_partial(True), **kw)
    np.testing.assert_allclose(array_of(lazy), eager.data, rtol=1e-6)


def test_inplace_returns_sigma(generator, uncertainty_model):
    p = _partial(False)
    out, sigma = hp.complete_partial_scan(p, model=generator, uncertainty=True, uncertainty_model=uncertainty_model,
                                          device="cpu", inplace=True, show_progressbar=False)
    assert out is None and np.isfinite(p.data).all() and sigma.data.shape == p.data.shape


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "linear", "uncertainty": True}, "needs method='generator'"),
    ({"method": "generator", "uncertainty_model": "x"}, "only used with uncertainty=True"),
])
def test_uncertainty_misuse(kwargs, message):
    p = _partial(False)
    snap = snapshot(p)
    with pytest.raises(ValueError, match=message):
        hp.complete_partial_scan(p, **kwargs)
    assert_unchanged(p, snap)


def test_uncertainty_model_of_another_generator_is_refused(uncertainty_model):
    with pytest.raises(ValueError, match="was trained for the generator"):
        hp.complete_partial_scan(_partial(False), uncertainty=True, uncertainty_model=uncertainty_model,
                                 device="cpu")


def test_noise_sources():
    p = _partial(False, noise={"dose": 100})
    assert noise_source(p) == ("simulation", {"dose": 100.0, "detector_sigma": 0.0})
    q = p.deepcopy()
    q.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 2.0)
    q.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset", 0.5)
    assert noise_source(q) == ("variance model", {"gain_factor": 2.0, "gain_offset": 0.5})
    clean = _partial(False)
    del clean.metadata.Signal.Noise_properties
    assert noise_source(clean) == ("simulation", {"dose": None, "detector_sigma": 0.0})  # known: no noise
    del clean.metadata.Signal.Partial_scan.noise
    assert noise_source(clean)[0] == "estimated"
    frame = np.array([[0.0, np.nan], [50.0, 200.0]])
    vm = frame_variance_model(frame, "simulation", {"dose": 100.0, "detector_sigma": 0.01})
    assert vm == {"gain_factor": 2.0, "gain_offset": pytest.approx(4.0), "offset": 0.0}


def test_blind_noise_estimate_follows_the_dose():
    from hyperspy_partialscan.noise import estimate_sampled_noise
    from hyperspy_partialscan.simulate import sample_frame

    clean = nanoparticle_field((256, 256), seed=3)
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    path = hp.generate_path("spiral", clean.shape, 0.1, 0)
    gains = [estimate_sampled_noise(sample_frame(clean, path, {"dose": d}, rng=1))[0] for d in (30, 300)]
    # within a factor 2 of the truth (specimen structure inflates it a little), and 10x apart as the doses are
    assert 1 / 60 < gains[0] < 2 / 30 and 1 / 600 < gains[1] < 2 / 300 and gains[0] / gains[1] > 5
    assert estimate_sampled_noise(np.full((8, 8), np.nan)) is None


def test_calibration_is_stored_and_looked_up(uncertainty_model):
    from hyperspy_partialscan.models import load_model

    cal = load_model(uncertainty_model).config["calibration"]
    assert set(cal["scales"]) >= {"spiral", "random", "jittered_grid"}
    assert all(k.startswith("1_in_") and "." not in k for k in cal["scales"]["spiral"])
    assert calibration_scale(cal, "spiral", 0.1) == cal["scales"]["spiral"]["1_in_10"]
    assert calibration_scale(cal, "nonsense", 0.1) == cal["global"] == calibration_scale(cal, None, 0.3)
    assert calibration_scale(None, "spiral", 0.1) == 1.0
    # alpha of highest likelihood, gamma of the best per-crop RMSE at that alpha, with both surfaces
    alpha, gamma = cal["structure"]["alpha"], cal["detail"]["gamma"]
    nll, spread = cal["detail"]["nll"][f"{alpha:g}"], cal["detail"]["crop_spread"][f"{alpha:g}"]
    assert min(nll.values()) == min(v for row in cal["detail"]["nll"].values() for v in row.values())
    assert spread[f"{gamma:g}"] == min(spread.values())


def test_structure_factor_scales_sigma(generator, uncertainty_model, tmp_path):
    """A calibration with a structure exponent multiplies sigma by exactly the structure factor of the completion."""
    import json
    import shutil

    from hyperspy_partialscan.models.features import frame_scale
    from hyperspy_partialscan.uncertainty import structure_factor

    src = Path(uncertainty_model)
    flat, steep = tmp_path / "flat.safetensors", tmp_path / "steep.safetensors"
    for dst, alpha in ((flat, 0.0), (steep, 0.7)):
        shutil.copy(src, dst)
        cfg = json.loads(src.with_suffix(".json").read_text())
        cfg["calibration"]["structure"]["alpha"] = alpha
        cfg["calibration"]["detail"]["gamma"] = 0.0  # the detail factor depends on sigma: left out here
        dst.with_suffix(".json").write_text(json.dumps(cfg))
    p = _partial()
    kw = dict(model=generator, uncertainty=True, device="cpu", show_progressbar=False)
    done, s0 = hp.complete_partial_scan(p, uncertainty_model=flat, **kw)
    _, s1 = hp.complete_partial_scan(p, uncertainty_model=steep, **kw)
    for k in range(p.data.shape[0]):
        lo, scale = frame_scale(p.data[k])
        factor = structure_factor((done.data[k] - lo) / scale, 0.7)
        assert factor.std() > 0.05  # the test frames have contrast to follow
        np.testing.assert_allclose(s1.data[k], s0.data[k] * factor, rtol=2e-3)


def test_detail_factor_scales_sigma(generator, uncertainty_model, tmp_path):
    """A calibration with a detail exponent multiplies each frame's sigma by exactly (detail / rms sigma) ** gamma."""
    import json
    import shutil

    from hyperspy_partialscan.uncertainty import detail_energy, detail_log_ratio

    src = Path(uncertainty_model)
    cfg = json.loads(src.with_suffix(".json").read_text())
    paths = []
    for gamma in (0.0, 0.8):
        dst = tmp_path / f"g{gamma}.safetensors"
        shutil.copy(src, dst)
        cfg["calibration"]["detail"]["gamma"] = gamma
        dst.with_suffix(".json").write_text(json.dumps(cfg))
        paths.append(dst)
    p = _partial()
    kw = dict(model=generator, uncertainty=True, device="cpu", show_progressbar=False)
    _, s0 = hp.complete_partial_scan(p, uncertainty_model=paths[0], **kw)
    _, s1 = hp.complete_partial_scan(p, uncertainty_model=paths[1], **kw)
    ratios = []
    for k in range(p.data.shape[0]):  # the ratio compares the uncalibrated sigma with the detail
        unsampled = ~np.isfinite(p.data[k])
        scale = calibration_scale(cfg["calibration"], "spiral", 1 - unsampled.mean())
        ratios.append(detail_log_ratio(detail_energy(p.data[k]), s0.data[k] / scale, unsampled))
        np.testing.assert_allclose(s1.data[k], s0.data[k] * np.exp(0.8 * ratios[-1]), rtol=2e-3)
    assert np.ptp(ratios) > 0.05  # the frames differ in detail, and so does the factor


def test_detail_energy_follows_the_unresolved_variation():
    from hyperspy_partialscan.uncertainty import detail_energy

    yy, xx = np.mgrid[:256, :256]
    lines = yy % 10 == 0  # a raster of lines 10 px apart
    for period, amplitude in ((6.0, 0.05), (6.0, 0.2), (10.0, 0.2)):
        truth = 0.5 + amplitude * np.sin(2 * np.pi * xx / period)
        expected = amplitude**2 / 2  # the fringes' power, inside the band
        assert 0.2 * expected < detail_energy(np.where(lines, truth, np.nan)) < 1.5 * expected
    smooth = 0.5 + 0.2 * np.sin(2 * np.pi * xx / 200.0)  # far coarser than the gaps: completions get it right
    assert detail_energy(np.where(lines, smooth, np.nan)) < 1e-3 * 0.2**2 / 2
    noise = np.random.default_rng(0).normal(0.5, 0.05, (256, 256))  # noise varies at every scale
    assert detail_energy(np.where(lines, noise, np.nan)) > 0.05 * 0.05**2
    assert np.isnan(detail_energy(np.full((8, 8), np.nan)))


@pytest.mark.parametrize(("median", "bound"), [(0.5, "low"), (1.08, None), (3.0, "high")])
def test_calibration_centres_the_crops_within_the_bands(median, bound):
    from hyperspy_partialscan.training.uncertainty import (
        ONE_SIGMA_FRACTION,
        TWO_SIGMA_FRACTION,
        UPPER_FRACTIONS,
        centred_scale,
        two_quantile_scale,
    )

    rng = np.random.default_rng(1)
    z = np.abs(rng.standard_normal(100_000)) * np.exp(0.4 * rng.standard_normal(100_000))  # heavy-tailed
    s = centred_scale(z, [median * 0.9, median, median * 1.01])
    within = np.mean(z <= s), np.mean(z <= 2 * s)
    assert within[0] >= ONE_SIGMA_FRACTION - 1e-3 and within[1] >= TWO_SIGMA_FRACTION - 1e-3  # never lowered
    assert within[0] <= UPPER_FRACTIONS[0] + 1e-3 or s == two_quantile_scale(z)  # never raised past the caps
    assert within[1] <= UPPER_FRACTIONS[1] + 1e-3 or s == two_quantile_scale(z)
    low, high = two_quantile_scale(z), min(np.quantile(z, UPPER_FRACTIONS[0]), np.quantile(z, UPPER_FRACTIONS[1]) / 2)
    assert low < high  # this distribution leaves room between the bands' two ends
    assert s == pytest.approx({"low": low, "high": high, None: median}[bound])  # the median crop, where allowed


def test_map_frames_with_channels():
    from hyperspy_partialscan.engine import map_frames

    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    out = map_frames(data, lambda f: np.stack([f, 2 * f], 1), batch_size=2, channels=2)
    assert out.shape == (2, 3, 2, 4, 5)
    result = out.compute()
    np.testing.assert_array_equal(result[..., 0, :, :], data)
    np.testing.assert_array_equal(result[..., 1, :, :], 2 * data)


def test_cli_writes_sigma(tmp_path, generator, uncertainty_model, capsys):
    from hyperspy_partialscan import cli

    inp = tmp_path / "in.hspy"
    _partial(False).save(inp)
    out, sig = tmp_path / "out.hspy", tmp_path / "sigma.hspy"
    rc = cli.main(["complete", str(inp), str(out), "--model", str(generator), "--uncertainty", str(sig),
                   "--uncertainty-model", str(uncertainty_model), "--device", "cpu", "--no-progressbar"])
    assert rc == 0, capsys.readouterr().err
    s = hs.load(sig)
    assert s.data.shape == (3, 64, 64) and np.isfinite(s.data).all()
    rc = cli.main(["complete", str(inp), str(tmp_path / "o2.hspy"), "--method", "linear", "--uncertainty",
                   str(tmp_path / "s2.hspy")])
    assert rc == 2 and "--uncertainty needs --method generator" in capsys.readouterr().err
    assert not (tmp_path / "o2.hspy").exists()


def test_training_records_its_generator_and_target(uncertainty_model, generator):
    from hyperspy_partialscan.models import load_model

    m = load_model(uncertainty_model, task="uncertainty")
    assert m.config["generator"]["sha256"] == load_model(generator).sha256
    assert "blurred truth" in m.config["target"]
    assert m.config["training"]["loss"].startswith("Gaussian negative log-likelihood")


def test_plot_completion_draws_sigma_and_error(generator, uncertainty_model):
    import matplotlib

    matplotlib.use("Agg")
    full = make_signal((), False, 64)
    p = hp.to_partial_scan(full, "spiral", 0.1, seed=0, show_progressbar=False)
    done, sigma = hp.complete_partial_scan(p, model=generator, uncertainty=True, uncertainty_model=uncertainty_model,
                                           device="cpu", show_progressbar=False)
    fig = hp.plot_completion(p, done, sigma, truth=full)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["partial scan", "completion", "uncertainty (sigma)", "|error| vs blurred truth"]
    assert np.ma.is_masked(fig.axes[0].images[0].get_array())  # NaN drawn as 'bad', not as an intensity


def test_dask_array_sigma_is_lazy(generator, uncertainty_model):
    _, sigma = hp.complete_partial_scan(_partial(True), model=generator, uncertainty=True,
                                        uncertainty_model=uncertainty_model, device="cpu")
    assert isinstance(sigma.data, da.Array)
