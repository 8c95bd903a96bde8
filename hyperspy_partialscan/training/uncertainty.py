"""Training and calibration of the completion's per-pixel uncertainty.

A small network (:class:`~hyperspy_partialscan.models.networks.UncertaintyUNet`)
learns, for a *frozen* generator, the standard deviation of the generator's
error at every pixel — the per-pixel form of the critic of Ede's adaptive
scanning paper, which predicts the completion's loss. Training minimises the
Gaussian negative log-likelihood ``log sigma + e**2 / (2 sigma**2)`` of the
error ``e`` of the completion (measured samples kept) against the training
target, the Gaussian-blurred truth, stabilised by ALRC like every loss of the
package. Crops are drawn as for the generator (every path family, coverages
1/100 to 1/10) and a larger fraction carries shot noise, detector noise and
scan jitter; the noise-level input is the true one for half of the noisy
crops and the blind estimate (:func:`~hyperspy_partialscan.noise.estimate_sampled_noise`)
for the rest, as at inference without a known dose.

:func:`calibrate_uncertainty` then measures, on frames not used for training,
the exponents of the structure factor (local contrast of the completion) and of
the detail factor (how much the measurements vary at the scales the scan does
not resolve; one number per frame), and one scale factor per path family and
coverage so that at least 68.3 % of the errors at unsampled pixels lie within sigma
(a Gaussian's one-sigma fraction) and 93 % within 2 sigma, raised towards the
median crop's actual over predicted RMSE as far as 72 % and 96 % (:func:`centred_scale`),
and stores them and their provenance in the model's JSON.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import torch

from .._validation import check_number
from ..metrics import blur_target
from ..models import load_model, save_model
from ..models.features import (
    UNCERTAINTY_CHANNELS,
    completion_inputs,
    kept_completion,
    sampled_noise_sd,
    uncertainty_inputs,
)
from ..models.networks import UncertaintyUNet
from ..noise import dose_variance_model
from ..uncertainty import (
    DETAIL_BAND,
    DETAIL_BOUNDS,
    DETAIL_MIN_SCALE,
    STRUCTURE_FLOOR,
    STRUCTURE_REFERENCE,
    STRUCTURE_SMOOTHING,
    detail_energies,
    detail_log_ratio,
    frame_variance_model,
    log_contrast,
)
from .completion import CropSampler, TrainConfig
from .crops import normalised_crops
from .loop import export_run, fit_network, initial_network, run_folder

__all__ = ["UncertaintySampler", "gaussian_nll_per_item", "train_uncertainty", "calibrate_uncertainty",
           "CALIBRATION_COVERAGES", "CALIBRATION_PATHS", "ONE_SIGMA_FRACTION"]

#: fraction of training crops with simulated noise
NOISE_FRACTION = 0.6
#: a Gaussian's fraction within one standard deviation: the calibration's target
ONE_SIGMA_FRACTION = 0.6827
#: the fraction of errors the calibration puts within two sigma (a Gaussian's is 0.954; the errors are heavier-tailed)
TWO_SIGMA_FRACTION = 0.93
#: the most errors the calibration puts within one and two sigma when it raises sigma to centre the crops' RMSE
UPPER_FRACTIONS = (0.72, 0.96)
#: coverages and path families calibrated separately
CALIBRATION_COVERAGES = (1 / 10, 1 / 20, 1 / 50, 1 / 100)
CALIBRATION_PATHS = ("spiral", "jittered_grid", "random", "grid", "lines", "lissajous", "line_hop")
#: the target the uncertainty refers to (recorded in models and outputs)
TARGET = "the Gaussian-blurred truth (5x5 kernel, sigma 2.5 px; hyperspy_partialscan.metrics.blur_target)"


def coverage_key(coverage):
    """A coverage as a metadata-safe key (no dots or slashes): ``1/20`` -> ``"1_in_20"``."""
    return f"1_in_{1 / coverage:g}".replace(".", "p")


def noise_variance_model(noise):
    """The variance model, in a training crop's units, of a simulated :class:`~.simulate.NoiseModel` (or None)."""
    return dose_variance_model(None) if noise is None else dose_variance_model(noise.dose, noise.detector_sigma)


def blind_variance_model(partial):
    """The blind estimate of a partial scan's noise as a variance model, as at inference without a known dose."""
    return frame_variance_model(partial, "estimated", {})


def completion_with_measurements(generator, inputs):
    """The generator's normalised completion (N, H, W) with the measured samples put back."""
    with torch.no_grad():
        pred = generator(torch.from_numpy(inputs))[:, 0].numpy()
    return kept_completion(inputs, pred)


class UncertaintySampler:
    """Batches of (uncertainty-network inputs, completion error) from random training crops.

    Parameters
    ----------
    frames : list of numpy.ndarray
        Training images.
    generator : torch.nn.Module
        The frozen completion network whose errors are learnt.
    config : TrainConfig
        Crop size, coverages, paths and noise fraction of the crops.
    rng : numpy.random.Generator
    """

    def __init__(self, frames, generator, config, rng):
        self.crops = CropSampler(frames, config, rng)
        self.generator, self.rng = generator.eval(), rng

    def batch(self, n):
        """Inputs (n, 6, H, W) and errors (n, 1, H, W), normalised units."""
        triples = [self.crops.crop_with_noise() for _ in range(n)]
        partial = np.stack([t[0] for t in triples])
        inputs, scales = completion_inputs(partial)
        pred = completion_with_measurements(self.generator, inputs)
        sd = np.empty_like(pred)
        for i, ((p, _, noise), (lo, s)) in enumerate(zip(triples, scales)):
            vm = noise_variance_model(noise) if self.rng.uniform() < 0.5 else blind_variance_model(p)
            sd[i] = sampled_noise_sd(pred[i] * s + lo, s, vm)
        targets = np.stack([(t - lo) / s for (_, t, _), (lo, s) in zip(triples, scales)])
        x = uncertainty_inputs(inputs, pred, sd)
        return torch.from_numpy(x), torch.from_numpy((pred - targets)[:, None].astype(np.float32))


def gaussian_nll_per_item(net, batch, crop_level_weight=0.0):
    """Per-item Gaussian negative log-likelihood of the errors under the predicted sigma (constant dropped).

    With ``crop_level_weight`` w > 0, each item adds ``w * log(mean sigma² / mean error²)²``: the squared log
    ratio of the crop's predicted to actual mean squared error, so that each crop's error level, not only
    each pixel's, is learnt (issue 12's per-crop bar).

    Examples
    --------
    >>> import torch
    >>> from hyperspy_partialscan.training.uncertainty import gaussian_nll_per_item
    >>> net = lambda x: torch.zeros_like(x)  # sigma 1 everywhere
    >>> err = torch.full((1, 1, 4, 4), 2.0)  # errors twice sigma: the crop's level is off by log 4
    >>> nll, with_level = gaussian_nll_per_item(net, (err, err)), gaussian_nll_per_item(net, (err, err), 1.0)
    >>> float(nll[0]), round(float(with_level[0]), 3)
    (2.0, 3.922)
    """
    x, err = batch
    log_sigma = net(x)
    loss = (log_sigma + 0.5 * err**2 * torch.exp(-2 * log_sigma)).mean(dim=(1, 2, 3))
    if crop_level_weight:
        predicted, actual = torch.exp(2 * log_sigma).mean(dim=(1, 2, 3)), (err**2).mean(dim=(1, 2, 3))
        loss = loss + crop_level_weight * (torch.log(predicted) - torch.log(actual + 1e-12)) ** 2
    return loss



def validation_batches(frames, generator, config):
    """The fixed batches (6 of 8 crops, seed 4321) on which ``train_uncertainty`` logs its validation."""
    sampler = UncertaintySampler(frames, generator, config, np.random.default_rng(4321))
    return [sampler.batch(8) for _ in range(6)]


def _validation(net, batches):
    """Mean NLL and the fraction of errors within one predicted sigma on fixed batches."""
    nll, within = [], []
    with torch.no_grad():
        for x, err in batches:
            log_sigma = net(x)
            nll.append(float((log_sigma + 0.5 * err**2 * torch.exp(-2 * log_sigma)).mean()))
            within.append(float((err.abs() <= torch.exp(log_sigma)).float().mean()))
    return {"val_nll": round(float(np.mean(nll)), 4), "val_within_sigma": round(float(np.mean(within)), 4)}


def train_uncertainty(frames, out_dir, *, generator=None, iterations=3000, batch_size=8, crop=128, width=8, lr=1e-3,
                      seed=0, threads=None, val_frames=None, resume=False, overwrite=False, max_seconds=None,
                      name="uncertainty_model", init=None, data_description=None, show_progressbar=True,
                      adaptive_fraction=0.0, context=False, downscale=1, crop_level_weight=0.0):
    """Train the per-pixel uncertainty network of a completion generator.

    Parameters
    ----------
    frames : list of numpy.ndarray
        Training images (never the frames used to calibrate or evaluate).
    out_dir : str or pathlib.Path
        Run folder (checkpoints, validation log, the exported model).
    generator : str or pathlib.Path or Model, optional
        The completion model whose errors are learnt (default: the shipped
        one); recorded with its SHA-256, and only this generator may use the
        result.
    iterations, batch_size, crop, width, lr, seed, threads : optional
        Training parameters.
    val_frames : list of numpy.ndarray, optional
        Frames for the validation log (NLL and fraction within one sigma).
    resume, overwrite, max_seconds : optional
        As in :func:`~hyperspy_partialscan.training.train_completion`.
    name : str
        Name of the exported model.
    init : str or Model, optional
        Fine-tune this uncertainty model.
    data_description : object, optional
        Recorded in the model's provenance.
    show_progressbar : bool
    adaptive_fraction : float
        Fraction of crops scanned with adaptive-style paths
        (:mod:`~hyperspy_partialscan.training.adaptive_masks`), as the generator saw.
    context : bool
        A fresh network gets the global-context branch (:class:`UncertaintyUNet`).
    downscale : int
        The network runs on ``downscale`` x ``downscale`` block means (:class:`UncertaintyUNet`); an ``init``
        model of another resolution is fine-tuned at this one.
    crop_level_weight : float
        Weight of the crop-level term of the loss (:func:`gaussian_nll_per_item`; 0: the pixels' likelihood only).

    Returns
    -------
    pathlib.Path
        The exported ``.safetensors`` (uncalibrated: run :func:`calibrate_uncertainty`).

    Raises
    ------
    ValueError
        ``crop_level_weight`` negative or not finite.
    """
    crop_level_weight = check_number("crop_level_weight", crop_level_weight, low=0)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = load_model(generator, task="completion")
    gen_net = gen.on(torch.device("cpu"))
    for p in gen_net.parameters():
        p.requires_grad_(False)
    net, init_record, start = initial_network(UncertaintyUNet, "uncertainty", init=init, out_dir=out_dir,
                                              resume=resume, in_channels=len(UNCERTAINTY_CHANNELS), width=width,
                                              context=context, downscale=downscale)
    if start == 0 and net.downscale != downscale:  # fine-tune the init model's weights at another resolution
        weights = net.state_dict()
        net = UncertaintyUNet(**{**net.config, "downscale": downscale})
        net.load_state_dict(weights)
    config = TrainConfig(crop=crop, batch_size=batch_size, noise_fraction=NOISE_FRACTION, seed=seed,
                         adaptive_fraction=adaptive_fraction)
    sampler = UncertaintySampler(frames, gen_net, config, np.random.default_rng([seed, start]))
    evaluate = None
    if val_frames:
        val = validation_batches(val_frames, gen_net, config)

        def evaluate(n):
            return _validation(n, val)

    t0 = time.time()
    with run_folder(out_dir, name, resume=resume, overwrite=overwrite):
        loss = functools.partial(gaussian_nll_per_item, crop_level_weight=crop_level_weight)
        history = fit_network(net, lambda it: sampler.batch(batch_size), loss, iterations=iterations,
                              lr=lr, out_dir=out_dir, resume=resume, max_seconds=max_seconds,
                              evaluate=evaluate, val_every=250, show_progressbar=show_progressbar, desc="uncertainty")
        return export_run(
            net, out_dir, name, history=history, start=start, started=t0,
            training={"batch_size": batch_size, "crop": crop, "lr": lr, "seed": seed, "noise_fraction": NOISE_FRACTION,
                      "adaptive_fraction": adaptive_fraction,
                      "loss": "Gaussian negative log-likelihood with ALRC" + (
                          f", plus {crop_level_weight:g} x the squared log ratio of each crop's predicted to actual "
                          "mean squared error" if crop_level_weight else ""), "data": data_description,
                      **init_record},
            extra={"inputs": list(UNCERTAINTY_CHANNELS), "generator": {"name": gen.name, "sha256": gen.sha256},
                   "target": TARGET, "calibration": None})


def two_quantile_scale(ratios):
    """The smallest scale ``s`` with :data:`ONE_SIGMA_FRACTION` of ``|error| / sigma`` within ``s`` and
    :data:`TWO_SIGMA_FRACTION` within ``2 s`` (heavy tails make the second one decide).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.training.uncertainty import two_quantile_scale
    >>> z = np.abs(np.random.default_rng(0).standard_normal(200_000))
    >>> round(two_quantile_scale(z), 2)  # a Gaussian: one sigma
    1.0
    """
    ratios = np.asarray(ratios, np.float64)
    return float(max(np.quantile(ratios, ONE_SIGMA_FRACTION), np.quantile(ratios, TWO_SIGMA_FRACTION) / 2))


def centred_scale(ratios, crop_ratios):
    """The calibration scale: :func:`two_quantile_scale`, raised towards the median crop's RMSE ratio.

    Sigma scaled by :func:`two_quantile_scale` puts a Gaussian's share of the errors within one sigma,
    but heavy tails leave the root mean sigma² of a frame (its predicted RMSE) below the frame's actual
    RMSE. The scale is therefore raised to the median over the crops of ``actual / predicted RMSE``, as
    far as the fractions of errors within one and two sigma stay at or below :data:`UPPER_FRACTIONS`
    (never lowered: at least :data:`ONE_SIGMA_FRACTION` and :data:`TWO_SIGMA_FRACTION` stay within).

    Parameters
    ----------
    ratios : array_like
        ``|error| / sigma`` at the unsampled pixels of every crop.
    crop_ratios : array_like
        Per crop, its actual RMSE over its predicted RMSE (root mean sigma²).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.training.uncertainty import centred_scale, two_quantile_scale
    >>> z = np.abs(np.random.default_rng(0).standard_t(5, size=200_000))  # heavy-tailed errors
    >>> rms = float(np.sqrt(np.mean(z**2)))  # every crop alike: the median crop's ratio
    >>> low, s = two_quantile_scale(z), centred_scale(z, [rms])
    >>> bool(low < s < rms), round(float(np.mean(z <= s)), 2)  # raised until 72 % lie within sigma
    (True, 0.72)
    >>> centred_scale(z, [0.5]) == low  # never lowered
    True
    """
    ratios = np.asarray(ratios, np.float64)
    low = two_quantile_scale(ratios)
    high = min(np.quantile(ratios, UPPER_FRACTIONS[0]), np.quantile(ratios, UPPER_FRACTIONS[1]) / 2)
    return float(max(low, min(float(np.median(crop_ratios)), high)))


def calibration_crops(frames, *, crop=256, per_frame=2, seed=2468):
    """Fixed crops (normalised to [0, 1]) of the calibration frames."""
    return list(normalised_crops(frames, crop, per_frame, np.random.default_rng(seed)))


def calibration_scans(crops, *, doses=(None, 100.0), seed=2468):
    """The calibration's partial scans of ``crops``: every path family and coverage, the noise cycling over ``doses``.

    Yields
    ------
    path, coverage, crop, partial, noise, known
        The path family, the coverage, the crop, its partial scan, the :class:`~hyperspy_partialscan.NoiseModel`
        (None: noise-free) and whether the noise level is given (every second round of ``doses``; else it is
        estimated blindly, as at inference without a known dose). Paths a crop cannot hold are skipped.
    """
    from ..paths import generate_path
    from ..simulate import NoiseModel, sample_frame

    rng = np.random.default_rng(seed)
    for path in CALIBRATION_PATHS:
        for coverage in CALIBRATION_COVERAGES:
            for k, x in enumerate(crops):
                dose = doses[k % len(doses)]
                noise = NoiseModel(dose=dose) if dose is not None else None
                try:
                    scan = generate_path(path, x.shape, coverage, rng)
                except ValueError:
                    continue
                partial = sample_frame(x, scan, noise, rng)
                if np.isfinite(partial).sum() >= 4:
                    yield path, coverage, x, partial, noise, bool((k // len(doses)) % 2)


def calibrate_uncertainty(model, frames, *, generator=None, output=None, crop=256, per_frame=2, doses=(None, 100.0),
                          seed=2468, data_description=None):
    """Calibrate an uncertainty model on frames not used for training, and store the scales in its JSON.

    For every path family of :data:`CALIBRATION_PATHS` and coverage of
    :data:`CALIBRATION_COVERAGES`, crops are scanned (clean and at each dose,
    the noise level known for half of the noisy crops and estimated blindly
    for the rest), completed by the model's generator (measured samples kept),
    and the scale ``s`` is found (:func:`centred_scale`) such that at least a fraction :data:`ONE_SIGMA_FRACTION`
    of the errors at unsampled pixels lies within ``s * sigma`` and :data:`TWO_SIGMA_FRACTION` within
    ``2 s * sigma``, raised towards the median crop's actual / predicted RMSE within :data:`UPPER_FRACTIONS`.

    Parameters
    ----------
    model : str or pathlib.Path or Model
        An uncertainty model.
    generator : str or pathlib.Path or Model, optional
        Its generator (default: the name it records); must have the recorded SHA-256.
    frames : list of numpy.ndarray
        Calibration frames (not used for training, not the evaluation split).
    output : str or pathlib.Path, optional
        Where to write the calibrated model (default: over ``model``'s files, atomically).
    crop, per_frame, doses, seed : optional
        The calibration crops and noise.
    data_description : object, optional
        Recorded with the calibration.

    Returns
    -------
    pathlib.Path
        The calibrated model's ``.safetensors``.
    """
    unc = load_model(model, task="uncertainty")
    gen = load_model(generator if generator is not None else unc.config["generator"]["name"], task="completion")
    if gen.sha256 != unc.config["generator"]["sha256"]:
        recorded = unc.config["generator"]
        raise ValueError(f"uncertainty model {unc.name!r} belongs to generator {recorded['name']!r} of SHA-256 "
                         f"{recorded['sha256'][:12]}…, not the one found ({gen.sha256[:12]}…)")
    crops = calibration_crops(frames, crop=crop, per_frame=per_frame, seed=seed)
    if not crops:
        raise ValueError(f"no calibration frame is at least {crop}x{crop} pixels")
    gen_net, unc_net = gen.on(torch.device("cpu")), unc.on(torch.device("cpu"))
    cases = {}
    for path, coverage, x, partial, noise, known in calibration_scans(crops, doses=doses, seed=seed):
        record = _predict(gen_net, unc_net, partial, noise, known=known)
        record["error"] = np.abs(record.pop("completion") - blur_target(x)).astype(np.float32)
        cases.setdefault((path, coverage), []).append(record)
    if not cases:
        raise ValueError(f"no calibration crop could be scanned: {len(crops)} crops of {crop} px, paths "
                         f"{', '.join(CALIBRATION_PATHS)}")
    structure, detail = fit_sigma_factors(list(cases.values()))
    sigmas = {key: [_factored_sigma(r, structure["alpha"], detail["gamma"]) for r in records]
              for key, records in cases.items()}
    ratios = {key: np.concatenate([r["error"][r["unsampled"]] / sigma[r["unsampled"]]
                                   for r, sigma in zip(records, sigmas[key])]) for key, records in cases.items()}
    crop_ratios = {key: [_rmse_ratio(r, sigma) for r, sigma in zip(records, sigmas[key])]
                   for key, records in cases.items()}
    scales = {path: {coverage_key(c): centred_scale(ratios[(path, c)], crop_ratios[(path, c)])
                     for c in CALIBRATION_COVERAGES if (path, c) in ratios} for path in CALIBRATION_PATHS}
    every = np.concatenate(list(ratios.values()))
    calibration = {
        "method": (f"sigma times the structure and detail factors, then the smallest scale putting at least "
                   f"{ONE_SIGMA_FRACTION:.1%} of the errors at unsampled pixels within sigma and "
                   f"{TWO_SIGMA_FRACTION:.0%} within 2 sigma, raised towards the median crop's actual / predicted "
                   f"RMSE while at most {UPPER_FRACTIONS[0]:.0%} lie within sigma and {UPPER_FRACTIONS[1]:.0%} "
                   "within 2 sigma (hyperspy_partialscan.training.uncertainty.centred_scale)"),
        "structure": structure,
        "detail": detail,
        "scales": scales,
        "global": centred_scale(every, np.concatenate(list(crop_ratios.values()))),
        "coverages": [float(c) for c in CALIBRATION_COVERAGES],
        "doses": [d for d in doses],
        "crops": len(crops),
        "crop": crop,
        "pixels": int(every.size),
        "data": data_description,
        "seed": seed,
    }
    extra = {k: v for k, v in unc.config.items() if k not in ("task", "architecture", "network", "sha256")}
    extra["calibration"] = calibration
    return save_model(unc_net, Path(output) if output is not None else unc.path, task="uncertainty",
                      architecture="UncertaintyUNet", extra=extra)


#: exponents of the structure and detail factors tried by the calibration
FACTOR_EXPONENTS = tuple(np.round(np.arange(0.0, 1.21, 0.1), 2))
#: the calibration's likelihood is evaluated on every FIT_STRIDE-th unsampled pixel (neighbours' errors are alike)
FIT_STRIDE = 4


def _factored_sigma(record, alpha, gamma):
    """A calibration record's sigma times its structure factor (``alpha``) and detail factor (``gamma``)."""
    sigma = record["sigma"] * np.exp(alpha * record["contrast"])
    if gamma:
        sigma = sigma * np.exp(gamma * detail_log_ratio(record["energy"], sigma, record["unsampled"]))
    return sigma


def _rmse_ratio(record, sigma):
    """A calibration record's actual RMSE over its predicted RMSE (root mean ``sigma``²), at its unsampled pixels."""
    m = record["unsampled"]
    return float(np.sqrt(np.mean(record["error"][m].astype(np.float64) ** 2)
                         / np.mean(sigma[m].astype(np.float64) ** 2)))


def fit_sigma_factors(cases, alphas=FACTOR_EXPONENTS, gammas=FACTOR_EXPONENTS):
    """Exponents of the structure factor (pixel likelihood) and of the detail factor (per-crop error level).

    The structure factor shapes sigma within a frame, so its exponent ``alpha`` is the one of highest
    Gaussian likelihood of the errors (one scale per case). The detail factor sets the level of a frame's
    sigma, so its exponent ``gamma`` is the one (at that ``alpha``) whose predicted RMSE per crop, root
    mean sigma², follows the crops' actual RMSE best: the smallest spread of ``log(predicted / actual)``
    over the crops of a case, averaged over cases.

    Parameters
    ----------
    cases : list of list of dict
        Per path family and coverage, one record per crop: ``unsampled`` (bool map), ``error``
        (absolute error), ``sigma`` (uncalibrated), ``contrast``
        (:func:`~hyperspy_partialscan.uncertainty.log_contrast`) and ``energy``
        (:func:`~hyperspy_partialscan.uncertainty.detail_energy`, in ``sigma``'s units squared, a number).
    alphas, gammas : sequence of float
        Exponents tried.

    Returns
    -------
    structure, detail : dict
        ``alpha`` and ``gamma``, with the factors' constants; ``detail["nll"]`` holds the mean negative
        log-likelihood per pixel and ``detail["crop_spread"]`` the spread, at every ``alpha`` (outer key)
        and ``gamma``.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.training.uncertainty import fit_sigma_factors
    >>> rng = np.random.default_rng(0)
    >>> records = []
    >>> for level in (0.5, 1.0, 2.0, 4.0):  # crops whose errors follow their measured detail, not sigma
    ...     contrast = rng.uniform(-2, 2, (64, 64))
    ...     error = np.abs(rng.standard_normal((64, 64))) * level * np.exp(0.4 * contrast)
    ...     records.append({"unsampled": np.ones((64, 64), bool), "error": error, "sigma": np.ones((64, 64)),
    ...                     "contrast": contrast, "energy": level**2})
    >>> structure, detail = fit_sigma_factors([records])
    >>> structure["alpha"], detail["gamma"]
    (0.4, 1.0)
    """
    nll, spread = {}, {}
    for a in alphas:
        per_case = []
        for records in cases:
            rows = []
            for r in records:
                pick = r["unsampled"].ravel()[::FIT_STRIDE]
                base = r["sigma"] * np.exp(a * r["contrast"])
                ratio = detail_log_ratio(r["energy"], base, r["unsampled"])
                err, log_base = r["error"].ravel()[::FIT_STRIDE][pick], np.log(base).ravel()[::FIT_STRIDE][pick]
                rows.append(np.stack([err, log_base, np.full(err.shape, ratio)]).astype(np.float64))
            per_case.append(rows)
        n = sum(row.shape[1] for rows in per_case for row in rows)
        for g in gammas:
            total, spreads = 0.0, []
            for rows in per_case:
                e = np.concatenate([row[0] for row in rows])
                log_sigma = np.concatenate([row[1] + g * row[2] for row in rows])
                scale2 = np.mean((e / np.exp(log_sigma)) ** 2)  # the best scale of this case
                total += e.size * (np.mean(log_sigma) + 0.5 * np.log(scale2) + 0.5)
                levels = [0.5 * np.log(np.mean(np.exp(2 * (row[1] + g * row[2]))) / np.mean(row[0] ** 2))
                          for row in rows if row.shape[1] and np.mean(row[0] ** 2) > 0]
                if len(levels) > 1:  # log(predicted / actual RMSE) per crop
                    spreads.append(np.std(levels))
            nll[(float(a), float(g))] = total / max(n, 1)
            spread[(float(a), float(g))] = float(np.mean(spreads)) if spreads else 0.0
    alpha = min(nll, key=nll.get)[0]
    gamma = min((key for key in spread if key[0] == alpha), key=spread.get)[1]
    table = lambda values: {f"{a:g}": {f"{g:g}": round(v, 5) for (a2, g), v in values.items() if a2 == a}  # noqa: E731
                            for a in alphas}
    structure = {"alpha": alpha, "floor": STRUCTURE_FLOOR, "reference": STRUCTURE_REFERENCE,
                 "smoothing": list(STRUCTURE_SMOOTHING),
                 "meaning": "sigma is multiplied by ((g + floor) / reference) ** alpha, g the completion's local "
                            "contrast (hyperspy_partialscan.uncertainty.structure_factor)"}
    detail = {"gamma": gamma, "band": list(DETAIL_BAND), "min_scale": DETAIL_MIN_SCALE, "bounds": list(DETAIL_BOUNDS),
              "nll": table(nll), "crop_spread": table(spread),
              "meaning": "each frame's sigma is then multiplied by (detail / rms sigma) ** gamma, detail the rms "
                         "variation of the measurements between the blur and the gaps between samples "
                         "(hyperspy_partialscan.uncertainty.detail_log_ratio)"}
    return structure, detail


def _predict(gen_net, unc_net, partial, noise, known):
    """A calibration record of one crop's partial scan: maps of the completion, uncalibrated sigma, log contrast of
    the completion and the unsampled pixels, and the detail energy (data units squared)."""
    inputs, ((lo, s),) = completion_inputs(partial[None])
    pred = completion_with_measurements(gen_net, inputs)
    vm = noise_variance_model(noise) if known else blind_variance_model(partial)
    sd = sampled_noise_sd(pred[0] * s + lo, s, vm)
    with torch.no_grad():
        log_sigma = unc_net(torch.from_numpy(uncertainty_inputs(inputs, pred, sd[None])))[0, 0].numpy()
    return {"sigma": (np.exp(log_sigma) * s).astype(np.float32), "completion": pred[0] * s + lo,
            "contrast": log_contrast(pred[0]), "energy": float(detail_energies(inputs)[0] * s**2),
            "unsampled": ~np.isfinite(partial)}
