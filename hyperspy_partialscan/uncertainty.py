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
from .blocks import block_mean

__all__ = ["UncertaintySpec", "plan_uncertainty", "shipped_uncertainty_models", "calibration_scale",
           "structure_factor", "log_contrast", "detail_energy", "detail_log_ratio", "MEANING"]

#: what the uncertainty means (recorded in the output's metadata)
MEANING = ("predicted standard deviation of the completion's error at each pixel, in data units, with respect to "
           "the Gaussian-blurred truth (5x5 kernel, sigma 2.5 px), the generator's training target; calibrated on "
           "held-out images so that at least 68 % of the errors at unsampled pixels lie within sigma and 93 % within "
           "2 sigma (the errors are heavier-tailed than a Gaussian), raised towards the typical frame's actual RMSE "
           "while at most 72 % lie within sigma and 96 % within 2 sigma")


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
#: bounds of the ratio of the detail energy to the mean sigma squared (sigma moves by at most 4**gamma either way)
DETAIL_BOUNDS = (1 / 16, 16.0)


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


def detail_energy(samples, gap=None):
    """Mean energy of the measurements' variation finer than the gaps between samples.

    The measurements are dense along the scan path (1 px steps) however sparse the
    path is, so they show the specimen's structure, and the noise, at the scales the
    completion cannot resolve between the path's lines: the sampled values smoothed at
    an inner and an outer scale (:data:`DETAIL_BAND`, normalised convolutions, so only
    samples count) differ by that variation. Returned: the mean square of the
    difference over the samples. Noise is not removed: it, too, makes completions err.

    Parameters
    ----------
    samples : numpy.ndarray
        (H, W) partial scan (NaN unsampled).
    gap : float, optional
        Mean distance (px) from an unsampled pixel to its nearest sample (computed when omitted).

    Returns
    -------
    float
        In the samples' units squared; NaN when the frame holds fewer than 8 samples or nothing unsampled.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.uncertainty import detail_energy
    >>> yy, xx = np.mgrid[:128, :128]
    >>> fringes = np.where(yy % 8 == 0, np.sin(xx / 2.0), np.nan)  # lines 8 px apart over fine fringes
    >>> ramp = np.where(yy % 8 == 0, xx / 128.0, np.nan)
    >>> bool(detail_energy(fringes) > 100 * detail_energy(ramp))
    True
    """
    from scipy.ndimage import distance_transform_edt

    x = np.asarray(samples, np.float32)
    m = np.isfinite(x)
    if m.sum() < 8 or m.all():
        return float("nan")
    if gap is None:
        gap = float(distance_transform_edt(~m)[~m].mean())
    inner = max(DETAIL_MIN_SCALE, DETAIL_BAND[0] * gap)
    outer = max(2 * inner, DETAIL_BAND[1] * gap)
    planes = [np.where(m, x, np.float32(0)), m.astype(np.float32)]
    (va, da), (vb, db) = _smooth(planes, inner), _smooth(planes, outer)
    band = va[m] / np.maximum(da[m], 1e-9) - vb[m] / np.maximum(db[m], 1e-9)
    return float(np.mean(band.astype(np.float64) ** 2))


def detail_log_ratio(energy, sigma, unsampled):
    """``log(detail / sigma)`` of a frame: half the log of :func:`detail_energy` over mean ``sigma**2``.

    Computed over the unsampled pixels, within :data:`DETAIL_BOUNDS`; 0 when
    either is not finite. The calibration multiplies the frame's sigma by
    ``exp(gamma * ratio)``, ``gamma`` fitted on held-out images: where the
    measurements vary more at the unresolved scales than the network expects,
    sigma rises, and it falls where they vary less.

    Parameters
    ----------
    energy : float
        :func:`detail_energy` of the frame, in ``sigma``'s units squared.
    sigma : numpy.ndarray
        (H, W) predicted sigma.
    unsampled : numpy.ndarray
        (H, W) bool, the unsampled pixels.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.uncertainty import detail_log_ratio
    >>> sigma, unsampled = np.ones((4, 4)), np.ones((4, 4), bool)
    >>> round(detail_log_ratio(4.0, sigma, unsampled), 4), detail_log_ratio(np.nan, sigma, unsampled)
    (0.6931, 0.0)
    """
    s2 = float(np.mean(np.asarray(sigma, np.float64)[unsampled] ** 2)) if np.any(unsampled) else float("nan")
    if not (np.isfinite(energy) and np.isfinite(s2) and s2 > 0):
        return 0.0
    return float(0.5 * np.log(np.clip(energy / s2, *DETAIL_BOUNDS)))


def detail_energies(inputs):
    """:func:`detail_energy` of a batch of frames (N,) from their generator inputs (N, 4, H, W), normalised units."""
    samples = np.where(inputs[:, 2] > 0.5, inputs[:, 0], np.nan)
    return np.array([detail_energy(x, gap=mean_gap(t)) for x, t in zip(samples, inputs)])


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
            ratio = [detail_log_ratio(e, s, t[2] < 0.5) for e, s, t in zip(detail_energies(tiles), sigma, tiles)]
            sigma = sigma * np.exp(gamma * np.array(ratio, np.float32))[:, None, None]
        factor = np.array([s[1] * s[3] for s in tile_scales], np.float32)[:, None, None]
        return (sigma * factor).astype(np.float32)


def shipped_uncertainty_models(generator_sha256):
    """Names of the shipped uncertainty models trained for the generator with this SHA-256.

    An uncertainty model predicts one generator's errors: its JSON records that
    generator's SHA-256. The first name is the one used by default.

    Examples
    --------
    >>> from hyperspy_partialscan.models import load_model
    >>> from hyperspy_partialscan.uncertainty import shipped_uncertainty_models
    >>> shipped_uncertainty_models(load_model("completion_default").sha256)
    ['uncertainty_default']
    >>> shipped_uncertainty_models("0" * 64)
    []
    """
    from .models import list_models, load_model

    return [n for n in list_models("uncertainty")
            if (load_model(n).config.get("generator") or {}).get("sha256") == generator_sha256]


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
    from .models import load_model

    if model is None:  # the shipped uncertainty model trained for this generator
        matching = shipped_uncertainty_models(generator_plan.sha256)
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
