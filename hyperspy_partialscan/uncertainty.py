"""The completion's per-pixel uncertainty: how far to trust each completed pixel.

``complete_partial_scan(..., uncertainty=True)`` runs, beside the generator and
in the same pass over the data, a small network that predicts the standard
deviation of the completion's error at every pixel with respect to the
generator's training target, the Gaussian-blurred truth (sigma 2.5 px); see
:mod:`hyperspy_partialscan.training.uncertainty` for how it is trained and
calibrated. This module resolves what the network needs per frame:

* the **noise level of the measurements**: HyperSpy's variance model in
  ``metadata.Signal.Noise_properties.Variance_linear_model`` when present; else
  the simulated noise recorded by :func:`~hyperspy_partialscan.to_partial_scan`;
  else a blind estimate from neighbouring samples
  (:func:`~hyperspy_partialscan.noise.estimate_sampled_noise`);
* the **calibration scale** for the frame's path family and coverage, stored in
  the uncertainty model's JSON, and the calibrated **structure factor**
  (:func:`structure_factor`): the network's sigma follows the local contrast
  of the specimen less than the errors do, so it is multiplied by a power of
  the completion's smoothed gradient magnitude, the exponent fitted by
  likelihood on the held-out calibration images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._signal_tools import noise_source
from .blocks import block_mean, block_spread

__all__ = ["UncertaintySpec", "plan_uncertainty", "calibration_scale", "structure_factor", "log_contrast",
           "detail_energy", "detail_log_ratio", "MEANING"]

#: what the uncertainty means (recorded in the output's metadata)
MEANING = ("predicted standard deviation of the completion's error at each pixel, in data units, with respect to "
           "the Gaussian-blurred truth (5x5 kernel, sigma 2.5 px), the generator's training target; calibrated on "
           "held-out images so that at least 68 % of the errors at unsampled pixels lie within sigma and 93 % within "
           "2 sigma (the errors are heavier-tailed than a Gaussian)")


def calibration_scale(calibration, path, coverage):
    """The calibration factor for a frame's path family and coverage (nearest calibrated coverage, log scale).

    Parameters
    ----------
    calibration : dict or None
        The ``calibration`` record of an uncertainty model's JSON (None: 1).
    path : str or None
        Path family (None or unknown: the global factor).
    coverage : float
        Fraction of sampled pixels of the frame.

    Returns
    -------
    float

    Examples
    --------
    >>> from hyperspy_partialscan.uncertainty import calibration_scale
    >>> cal = {"global": 1.5, "scales": {"spiral": {"1_in_10": 1.2, "1_in_50": 2.0}}}
    >>> calibration_scale(cal, "spiral", 0.08), calibration_scale(cal, "spiral", 0.01)
    (1.2, 2.0)
    >>> calibration_scale(cal, None, 0.1)
    1.5
    """
    if not calibration:
        return 1.0
    table = (calibration.get("scales") or {}).get(path) or {}
    if not table or not coverage > 0:
        return float(calibration.get("global", 1.0))
    best = min(table, key=lambda key: abs(np.log(float(key.split("_in_")[1].replace("p", "."))) + np.log(coverage)))
    return float(table[best])


#: Gaussian smoothing (px) of the completion before its gradient, and of the gradient magnitude after
STRUCTURE_SMOOTHING = (1.5, 4.0)
#: gradient magnitude (normalised intensity per px) added before the power, and the one where the factor is 1
STRUCTURE_FLOOR, STRUCTURE_REFERENCE = 0.003, 0.02


def log_contrast(completion):
    """``log((g + floor) / reference)``: the log of the local contrast ``g`` of normalised completions.

    ``g`` is the gradient magnitude of the completion smoothed by
    :data:`STRUCTURE_SMOOTHING` [0] px, averaged over :data:`STRUCTURE_SMOOTHING` [1] px:
    the local contrast of the specimen at the scale of the completion's errors
    (computed on 2 x 2 block means, each value spread back over its block).

    Parameters
    ----------
    completion : numpy.ndarray
        (H, W) or (N, H, W) completions normalised to the frame's [0, 1] range
        (:func:`~hyperspy_partialscan.models.features.frame_scale`).

    Returns
    -------
    numpy.ndarray
        float32, ``completion``'s shape.
    """
    from scipy.ndimage import gaussian_filter

    c = np.asarray(completion, np.float32)
    frames = c.reshape((-1,) + c.shape[-2:])
    h, w = frames.shape[-2:]
    out = np.empty(frames.shape, np.float32)
    inner, outer = STRUCTURE_SMOOTHING
    for k, f in enumerate(frames):
        # on 2 x 2 block means (4x cheaper; the contrast is smoothed over 4 px anyway), spread back
        f = np.pad(f, ((0, h % 2), (0, w % 2)), mode="edge")
        small = block_mean(f, 2).astype(np.float32)
        if min(small.shape) < 2:
            g = np.zeros_like(small)
        else:
            g = gaussian_filter(np.hypot(*np.gradient(gaussian_filter(small, inner / 2))) / 2, outer / 2)
        out[k] = np.repeat(np.repeat(g, 2, axis=0), 2, axis=1)[:h, :w]
    return np.log((out + STRUCTURE_FLOOR) / STRUCTURE_REFERENCE).reshape(c.shape)


def structure_factor(completion, alpha):
    """Local-structure factor ``((g + floor) / reference) ** alpha`` of normalised completions (:func:`log_contrast`).

    Errors of a completion grow with the specimen's local contrast (edges,
    lattice fringes, particles) and vanish on flat support and vacuum, more
    steeply than the uncertainty network predicts; the calibration fits
    ``alpha`` by likelihood on held-out images (0: no factor).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.uncertainty import structure_factor
    >>> ramp = np.tile(np.linspace(0, 1, 64), (64, 1))  # gradient 1/63 per pixel
    >>> f = structure_factor(ramp, 0.5)
    >>> round(float(f[32, 32]), 3), float(structure_factor(ramp, 0.0).max())
    (0.971, 1.0)
    """
    if alpha == 0:
        return np.ones(np.shape(completion), np.float32)
    return np.exp(float(alpha) * log_contrast(completion)).astype(np.float32)


def structure_alpha(calibration):
    """The structure factor's exponent recorded by a calibration (0 when it has none)."""
    return float(((calibration or {}).get("structure") or {}).get("alpha", 0.0))


#: the band of the measurements' detail: inner and outer Gaussian scale in units of the mean distance from an
#: unsampled pixel to its nearest sample (the inner scale at least DETAIL_MIN_SCALE px)
DETAIL_BAND, DETAIL_MIN_SCALE = (0.4, 1.6), 0.7
#: the scale (px, Gaussian sigma) over which detail and sigma are compared, computed on blocks of DETAIL_BLOCK px
DETAIL_SCALE, DETAIL_BLOCK = 96.0, 8
#: bounds of the ratio of detail to sigma (a factor of 8 either way)
DETAIL_BOUNDS = (1 / 64, 64.0)


def _local_mean(values, weights):
    """Weighted mean of ``values`` over about :data:`DETAIL_SCALE` px around each pixel (on blocks, spread back)."""
    from scipy.ndimage import gaussian_filter

    b = DETAIL_BLOCK
    h, w = values.shape
    padded = (h + -h % b, w + -w % b)
    pad = ((0, padded[0] - h), (0, padded[1] - w))
    blocks = (padded[0] // b, b, padded[1] // b, b)
    num = np.pad(np.where(weights, values, 0.0), pad).reshape(blocks).sum(axis=(1, 3))
    den = np.pad(weights.astype(np.float64), pad).reshape(blocks).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        small = gaussian_filter(num, DETAIL_SCALE / b, mode="reflect") / gaussian_filter(den, DETAIL_SCALE / b,
                                                                                          mode="reflect")
    return block_spread(small, padded, b)[:h, :w]


def _upsample(planes, factor, shape):
    """Planes (k, h, w) of ``factor`` x ``factor`` block means linearly interpolated to the pixels of ``shape``."""
    out = planes
    for axis, n in ((1, shape[0]), (2, shape[1])):
        x = np.clip((np.arange(n) + 0.5) / factor - 0.5, 0, out.shape[axis] - 1)
        i0 = np.minimum(x.astype(int), out.shape[axis] - 2) if out.shape[axis] > 1 else np.zeros(n, int)
        t = (x - i0).astype(np.float32)
        t = t[:, None] if axis == 1 else t
        lo, hi = np.take(out, i0, axis=axis), np.take(out, np.minimum(i0 + 1, out.shape[axis] - 1), axis=axis)
        out = lo + t * (hi - lo)
    return out


def _smooth(planes, sigma):
    """Gaussian smoothing (float32) of planes (k, H, W); wide kernels run on block means, interpolated back."""
    from scipy.ndimage import gaussian_filter

    planes = np.asarray(planes, np.float32)
    factor = int(sigma // 2)
    h, w = planes.shape[-2:]
    if factor >= 2:
        padded = (h + -h % factor, w + -w % factor)
        planes = np.pad(planes, ((0, 0), (0, padded[0] - h), (0, padded[1] - w)), mode="edge").reshape(
            (len(planes), padded[0] // factor, factor, padded[1] // factor, factor)).mean(axis=(2, 4))
    out = np.stack([gaussian_filter(a, sigma / max(factor, 1), truncate=3.0) for a in planes])
    if factor >= 2:
        out = _upsample(out, factor, (h, w))
    return out


def detail_energy(samples, noise_sd=None, gap=None):
    """Local energy of the measurements' detail finer than the gaps between samples, noise removed.

    The measurements are dense along the scan path (1 px steps) however sparse the
    path is, so they show the specimen's structure at the scales the completion
    cannot resolve between the path's lines: the sampled values smoothed at an
    inner and an outer scale (:data:`DETAIL_BAND`, normalised convolutions, so only
    samples count) differ by that structure. Its square, less its expected value
    for the measurement noise, is averaged over :data:`DETAIL_SCALE` px.

    Parameters
    ----------
    samples : numpy.ndarray
        (H, W) partial scan, normalised (NaN unsampled).
    noise_sd : numpy.ndarray, optional
        (H, W) noise standard deviation of the measurements, normalised units (None: noise-free).
    gap : float, optional
        Mean distance (px) from an unsampled pixel to its nearest sample (computed when omitted).

    Returns
    -------
    numpy.ndarray
        (H, W) float64, normalised units squared; NaN where the frame holds too few samples.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.uncertainty import detail_energy
    >>> yy, xx = np.mgrid[:128, :128]
    >>> scan = np.where(yy % 8 == 0, np.sin(xx / 2.0), np.nan)  # lines 8 px apart over fine fringes
    >>> flat = np.where(yy % 8 == 0, 0.5, np.nan)
    >>> bool(detail_energy(scan).mean() > 100 * max(detail_energy(flat).mean(), 1e-12))
    True
    """
    from scipy.ndimage import distance_transform_edt

    x = np.asarray(samples, np.float32)
    m = np.isfinite(x)
    if m.sum() < 8 or m.all():
        return np.full(x.shape, np.nan)
    if gap is None:
        gap = float(distance_transform_edt(~m)[~m].mean())
    inner = max(DETAIL_MIN_SCALE, DETAIL_BAND[0] * gap)
    outer = max(2 * inner, DETAIL_BAND[1] * gap)
    mf = m.astype(np.float32)
    v = np.where(m, x, np.float32(0))
    (va, da), (vb, db) = _smooth([v, mf], inner), _smooth([v, mf], outer)
    da, db = np.maximum(da, 1e-9), np.maximum(db, 1e-9)
    energy = (va / da - vb / db).astype(np.float64) ** 2
    if noise_sd is not None:  # the band-passed noise's variance: sum over samples of (weight a - weight b)^2 var
        var = np.where(m, np.asarray(noise_sd, np.float32) ** 2, np.float32(0))[None]
        both = 1.0 / np.sqrt(1 / inner**2 + 1 / outer**2)
        energy -= (_smooth(var, inner / np.sqrt(2))[0] / (4 * np.pi * inner**2 * da**2)
                   + _smooth(var, outer / np.sqrt(2))[0] / (4 * np.pi * outer**2 * db**2)
                   - _smooth(var, both)[0] * both**2 / (np.pi * inner**2 * outer**2 * da * db))
    return _local_mean(energy, m)


def detail_log_ratio(samples, sigma, noise_sd=None, energy=None, gap=None):
    """``log(detail / sigma)`` over about :data:`DETAIL_SCALE` px: how far sigma is below the measured detail.

    Half the log of :func:`detail_energy` over the mean of ``sigma**2`` at the
    unsampled pixels around each pixel, within :data:`DETAIL_BOUNDS` (0 where the
    frame holds too few samples). The calibration multiplies sigma by
    ``exp(gamma * ratio)``, ``gamma`` fitted on held-out images.

    Parameters
    ----------
    samples, noise_sd, gap
        As for :func:`detail_energy`; a boolean ``samples`` marks the unsampled pixels (with ``energy``).
    sigma : numpy.ndarray
        (H, W) predicted sigma, normalised units.
    energy : numpy.ndarray, optional
        :func:`detail_energy` of ``samples`` when already computed.

    Returns
    -------
    numpy.ndarray
        (H, W) float32.
    """
    if energy is None:
        energy = detail_energy(samples, noise_sd, gap)
    samples = np.asarray(samples)
    unsampled = samples if samples.dtype == bool else ~np.isfinite(samples.astype(np.float64))
    if not unsampled.any() or not np.isfinite(energy).all():
        return np.zeros(np.shape(samples), np.float32)
    s2 = _local_mean(np.asarray(sigma, np.float64) ** 2, unsampled)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.clip(energy / s2, *DETAIL_BOUNDS)
    return (0.5 * np.log(np.where(np.isfinite(ratio), ratio, 1.0))).astype(np.float32)


def measured_noise_sd(samples):
    """Noise standard deviation of each measurement, estimated from adjacent samples (zeros when too few).

    The detail factor removes the noise the measurements actually carry, whatever
    variance model the frame comes with: a simulated scan of a recorded image
    carries that image's own noise as well as the simulated dose's, and both
    would otherwise count as detail.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.uncertainty import measured_noise_sd
    >>> rng = np.random.default_rng(0)
    >>> scan = np.where(np.mgrid[:128, :128][0] % 8 == 0, 0.5 + 0.1 * rng.standard_normal((128, 128)), np.nan)
    >>> round(float(np.nanmean(np.where(np.isfinite(scan), measured_noise_sd(scan), np.nan))), 2)
    0.1
    """
    from .noise import estimate_sampled_noise

    x = np.asarray(samples, np.float64)
    est = estimate_sampled_noise(x)
    if est is None:
        return np.zeros(x.shape, np.float32)
    return np.sqrt(np.clip(est[0] * np.nan_to_num(x) + est[1], 0, None)).astype(np.float32)


def detail_energies(inputs):
    """:func:`detail_energy` of a batch of frames from their generator inputs (N, 4, H, W), normalised units, with
    the noise the measurements carry removed (:func:`measured_noise_sd`)."""
    samples = np.where(inputs[:, 2] > 0.5, inputs[:, 0], np.nan)
    return np.stack([detail_energy(x, measured_noise_sd(x), gap=mean_gap(t)) for x, t in zip(samples, inputs)])


def mean_gap(inputs):
    """Mean distance (px) from an unsampled pixel to its nearest sample, from a frame's generator inputs (4, H, W)."""
    from .models.features import DISTANCE_SCALE

    unsampled = inputs[2] < 0.5
    if not unsampled.any():
        return 0.0
    return float(DISTANCE_SCALE * np.mean(np.arctanh(np.clip(inputs[3][unsampled], 0.0, 1 - 1e-7))))


def detail_gamma(calibration):
    """The detail factor's exponent recorded by a calibration (0 when it has none)."""
    return float(((calibration or {}).get("detail") or {}).get("gamma", 0.0))


def frame_variance_model(frame, kind, params):
    """The variance model (data units) of one partial-scan frame's measurements, from :func:`noise_source`'s answer.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.uncertainty import frame_variance_model
    >>> frame_variance_model(np.array([[0.0, np.nan, 200.0]]), "simulation", {"dose": 100.0, "detector_sigma": 0.0})
    {'gain_factor': 2.0, 'gain_offset': 0.0, 'offset': 0.0}
    """
    from .noise import estimate_sampled_noise
    from .simulate import simulated_variance_model

    if kind == "variance model":
        return dict(params)
    if kind == "simulation":
        return simulated_variance_model(frame, params.get("dose"), params["detector_sigma"])
    est = estimate_sampled_noise(frame)
    return {"gain_factor": 0.0, "gain_offset": 0.0} if est is None else {"gain_factor": est[0],
                                                                          "gain_offset": est[1]}


@dataclass(frozen=True)
class UncertaintySpec:
    """What a block needs to predict the uncertainty: the network plan, calibration, path family, noise source."""

    plan: object
    calibration: dict | None
    path: str | None
    noise_kind: str
    noise_params: dict

    def frame_terms(self, frame):
        """(variance model, calibration factor) of one partial-scan frame."""
        coverage = float(np.isfinite(frame).mean())
        return (frame_variance_model(frame, self.noise_kind, self.noise_params),
                calibration_scale(self.calibration, self.path, coverage))

    def sigma(self, tiles, raw, tile_scales, device):
        """Calibrated sigma (data units) of tiles (n, 4, h, w) whose normalised completions are ``raw`` (n, h, w)."""
        from .engine import worker_network
        from .models.features import kept_completion, sampled_noise_sd, uncertainty_inputs
        from .models.inference import run_network

        network = worker_network(self.plan, "uncertainty")
        kept = kept_completion(tiles, raw)
        sd = np.stack([sampled_noise_sd(k * s[1] + s[0], s[1], s[2]) for k, s in zip(kept, tile_scales)])
        log_sigma = run_network(network, uncertainty_inputs(tiles, kept, sd), device, self.plan.precision)
        sigma = np.exp(log_sigma) * structure_factor(kept, structure_alpha(self.calibration))
        gamma = detail_gamma(self.calibration)
        if gamma:
            energy = detail_energies(tiles)
            sigma = sigma * np.exp(gamma * np.stack([detail_log_ratio(t[2] < 0.5, s, energy=e)
                                                     for t, s, e in zip(tiles, sigma, energy)]))
        factor = np.array([s[1] * s[3] for s in tile_scales], np.float32)[:, None, None]
        return (sigma * factor).astype(np.float32)


def plan_uncertainty(generator_plan, model=None, path=None, signal=None):
    """Resolve the uncertainty model matching a generator plan (before any graph is built).

    Parameters
    ----------
    generator_plan : NetworkPlan
        The completion network's plan.
    model : str or pathlib.Path, optional
        Uncertainty model name or path; default: the shipped one, which must
        belong to the generator.
    path : str, optional
        The frames' path family (for the calibration), e.g. from the metadata.
    signal : hyperspy.signal.BaseSignal, optional
        Source of the noise information (:func:`noise_source`).

    Returns
    -------
    UncertaintySpec

    Raises
    ------
    ValueError
        The uncertainty model was trained for another generator.
    """
    from .engine import NetworkPlan
    from .models import list_models, load_model

    if model is None:  # the shipped uncertainty model trained for this generator
        matching = [n for n in list_models("uncertainty")
                    if (load_model(n).config.get("generator") or {}).get("sha256") == generator_plan.sha256]
        if not matching:
            raise ValueError(f"no shipped uncertainty model belongs to the generator {generator_plan.name!r}: pass "
                             "uncertainty_model=PATH (trained with hyperspy_partialscan.training.train_uncertainty)")
        model = matching[0]
    m = load_model(model, task="uncertainty")
    recorded = m.config.get("generator") or {}
    if recorded.get("sha256") != generator_plan.sha256:
        raise ValueError(
            f"the uncertainty model {m.name!r} was trained for the generator {recorded.get('name')!r} "
            f"(SHA-256 {str(recorded.get('sha256'))[:12]}…), not for {generator_plan.name!r} "
            f"({generator_plan.sha256[:12]}…); train one for this generator with "
            "hyperspy_partialscan.training.train_uncertainty"
        )
    plan = NetworkPlan(str(m.path), m.sha256, m.name, generator_plan.device, generator_plan.precision,
                       generator_plan.batch_size)
    kind, params = noise_source(signal) if signal is not None else ("estimated", {})
    return UncertaintySpec(plan, m.config.get("calibration"), path, kind, params)
