"""Noise of whole S/TEM frames (array level): a noise model to degrade clean frames, and noise-level estimates.

:class:`FrameNoise` degrades a whole raster frame (training and benchmarking
denoisers); the scan simulator's :class:`~hyperspy_partialscan.NoiseModel`
(signal level, passed to :func:`~hyperspy_partialscan.to_partial_scan`) reads
noisy samples along a scan path instead. The signal-level entry point for
denoising is :func:`hyperspy_partialscan.denoise`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = ["FrameNoise", "dose_variance_model", "degrade", "estimate_sigma", "estimate_noise_model",
           "estimate_sampled_noise", "white_noise_variance"]


@dataclass(frozen=True)
class FrameNoise:
    """Noise of a full S/TEM frame (used to train and benchmark denoisers).

    Parameters
    ----------
    dose : float or None
        Electrons per pixel at full scale (the frame's maximum; intensity 0 is
        zero signal): Poisson shot noise. None: no shot noise.
    detector_sigma : float
        Gaussian detector noise, fraction of full scale.
    line_jitter : float
        Standard deviation (pixels) of a smooth horizontal displacement of each
        scan line (fast-scan jitter).
    streak_sigma : float
        Standard deviation of a per-line multiplicative gain error (streaks),
        as a fraction.
    """

    dose: float | None = None
    detector_sigma: float = 0.0
    line_jitter: float = 0.0
    streak_sigma: float = 0.0

    def as_dict(self):
        return asdict(self)


def dose_variance_model(dose, detector_sigma=0.0):
    """HyperSpy's ``Variance_linear_model`` of simulated noise, in units where full scale is 1.

    Shot noise at ``dose`` electrons per pixel at full scale (None: none) plus
    Gaussian detector noise of ``detector_sigma`` (fraction of full scale):
    variance = x / dose + detector_sigma². The model of a :class:`FrameNoise`
    or of a scan's :class:`~hyperspy_partialscan.NoiseModel`.

    Examples
    --------
    >>> from hyperspy_partialscan.noise import dose_variance_model
    >>> dose_variance_model(100.0, 0.5)
    {'gain_factor': 0.01, 'gain_offset': 0.25}
    >>> dose_variance_model(None)
    {'gain_factor': 0.0, 'gain_offset': 0.0}
    """
    return {"gain_factor": 0.0 if dose is None else 1.0 / dose, "gain_offset": float(detector_sigma) ** 2}


def degrade(frame, noise, rng=None):
    """Apply :class:`FrameNoise` to a clean frame (values >= 0 expected, any scale).

    Returns a float32 noisy frame on the same intensity scale.
    """
    rng = np.random.default_rng(rng)
    f = np.asarray(frame, np.float64)
    full = float(f.max()) if f.max() > 0 else 1.0
    x = np.clip(f / full, 0, None)
    h, w = x.shape
    if noise.line_jitter:
        shifts = ndimage.gaussian_filter1d(rng.standard_normal(h), 2.0)
        shifts *= noise.line_jitter / (shifts.std() + 1e-12)
        cols = np.arange(w)[None, :] + shifts[:, None]
        rows = np.repeat(np.arange(h)[:, None], w, 1)
        x = ndimage.map_coordinates(x, [rows, cols], order=1, mode="nearest")
    if noise.streak_sigma:
        x = x * (1 + noise.streak_sigma * rng.standard_normal(h))[:, None]
        x = np.clip(x, 0, None)
    if noise.dose is not None:
        x = rng.poisson(x * noise.dose) / noise.dose
    if noise.detector_sigma:
        x = x + rng.normal(0, noise.detector_sigma, x.shape)
    return (x * full).astype(np.float32)


def estimate_sigma(frame):
    """Blind estimate of the noise standard deviation (Immerkaer 1996).

    The frame is convolved with the difference of two Laplacians, which cancels
    smooth structure; the mean absolute response gives the Gaussian-equivalent
    sigma. Fast (one convolution) and robust to edges.
    """
    f = np.asarray(frame, np.float64)
    if min(f.shape) < 3:
        raise ValueError(f"frame {f.shape} is too small to estimate its noise")
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)
    resp = ndimage.convolve(f, kernel, mode="reflect")[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(resp).mean() / 6)


#: spectral band of the white-noise floor: both spatial frequencies at least this many cycles per pixel
WHITE_BAND = 0.4
#: fewest Fourier coefficients in :data:`WHITE_BAND` for a white-noise floor
MIN_WHITE_COEFFICIENTS = 64


def white_noise_variance(frame):
    """Variance of a frame's white noise, from the floor of its power spectrum near the Nyquist frequency.

    White noise (independent pixels, even of unequal variances as shot noise
    is) has a flat power spectrum at the mean pixel variance; the specimen's
    structure, blurred by the probe, has little power in the band where both
    spatial frequencies are at least :data:`WHITE_BAND` cycles per pixel, and
    a lattice's Bragg peaks there are few. The median of the periodogram in
    that band, divided by ln 2 (the median of an exponential variable of mean
    1), estimates the noise variance; frames of a stack are pooled.

    Parameters
    ----------
    frame : numpy.ndarray
        2-D frame, or a stack (n, H, W); all finite.

    Returns
    -------
    float or None
        Mean noise variance per pixel (frame units squared), or None when the
        band holds fewer than :data:`MIN_WHITE_COEFFICIENTS` coefficients (frames
        under about 20 x 20 pixels).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.noise import white_noise_variance
    >>> from hyperspy_partialscan.specimens import atomic_lattice
    >>> clean = atomic_lattice((256, 256), spacing=6.0, seed=0)
    >>> noisy = clean + np.random.default_rng(0).normal(0, 0.05, clean.shape)
    >>> round(white_noise_variance(noisy) / 0.05**2, 1)
    1.0
    """
    f = np.asarray(frame, np.float64)
    frames = f[None] if f.ndim == 2 else f
    fy = np.abs(np.fft.fftfreq(frames.shape[1]))[:, None]
    fx = np.fft.rfftfreq(frames.shape[2])[None, :]
    band = (fy >= WHITE_BAND) & (fx >= WHITE_BAND)
    if band.sum() * len(frames) < MIN_WHITE_COEFFICIENTS:
        return None
    power = [np.abs(np.fft.rfft2(x - x.mean())[band]) ** 2 / x.size for x in frames]
    return float(np.median(np.concatenate(power)) / np.log(2))


def estimate_noise_model(frame, bins=16):
    """Blind estimate of signal-dependent noise: variance = gain * signal + offset.

    S/TEM noise is mostly Poisson (variance proportional to the signal) plus
    detector noise (constant), so one sigma for the whole frame over-smooths
    dark areas and under-smooths bright ones. Two steps:

    1. the *shape* of the model, following Foi et al. (2008) in spirit: the
       Immerkaer response (which cancels smooth structure; for white noise its
       variance is 36 times the pixel variance) is grouped into ``bins``
       quantile bins of the local mean, each bin's variance is taken robustly
       (median absolute deviation, so edges and isolated atoms do not inflate
       it) and a non-negative linear model is fitted to them
       (:func:`fit_variance_model`);
    2. its *level*: the model is scaled so that its mean over the frame equals
       the white-noise floor of the power spectrum
       (:func:`white_noise_variance`). Where structure fills the frame (a
       dense lattice at high dose) the bins' variances are inflated by it,
       while the spectrum's floor near the Nyquist frequency is not; at very
       low counts, where the median absolute deviation of discrete counts is
       biased, the floor is not either.

    It measures all the white noise in the frame: on an image that already
    carries noise before more is added (as the benchmarks' experimental
    references do), the estimate is the sum of both.

    Parameters
    ----------
    frame : numpy.ndarray
        2-D frame, or a stack (n, H, W) sharing one noise model (pooled); all
        finite.
    bins : int
        Number of intensity bins.

    Returns
    -------
    tuple of float
        ``(gain, offset)`` in the frame's units: variance = gain * signal + offset.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.noise import estimate_noise_model
    >>> from hyperspy_partialscan.specimens import atomic_lattice
    >>> clean = atomic_lattice((256, 256), seed=0)
    >>> clean = clean / clean.max()
    >>> noisy = np.random.default_rng(0).poisson(50 * clean) / 50
    >>> gain, offset = estimate_noise_model(noisy)
    >>> bool(abs(gain * 50 - 1) < 0.15)
    True
    """

    f = np.asarray(frame, np.float64)
    frames = f[None] if f.ndim == 2 else f
    if f.ndim not in (2, 3) or min(frames.shape[1:]) < 3:
        raise ValueError(f"frame {f.shape} is too small to estimate its noise (need 2-D frames of >= 3 x 3)")
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)
    resp = np.concatenate([ndimage.convolve(x, kernel, mode="reflect")[1:-1, 1:-1].ravel() for x in frames])
    mean = np.concatenate([ndimage.uniform_filter(x, 3, mode="reflect")[1:-1, 1:-1].ravel() for x in frames])
    fit = fit_variance_model(resp / 6.0, mean, bins, min_count=16)
    level = white_noise_variance(frames)
    if fit is None:
        return 0.0, level if level is not None else float(np.mean([estimate_sigma(x) ** 2 for x in frames]))
    modelled = float(np.clip(fit[0] * mean + fit[1], 0, None).mean())
    if level is None:
        return fit
    if not modelled > 0:
        return 0.0, level
    return fit[0] * level / modelled, fit[1] * level / modelled


#: fewest pairs of adjacent samples from which :func:`estimate_sampled_noise` estimates a noise model
MIN_SAMPLE_PAIRS = 64


def estimate_sampled_noise(frame, bins=8):
    """Blind estimate of a partial scan's noise, variance = gain * signal + offset, from adjacent samples.

    A partial scan has too few samples for :func:`estimate_noise_model`; but
    scan paths sample many pairs of neighbouring pixels (along a spiral arm, a
    scan line, or by chance). Half the squared difference of a neighbouring
    pair is an unbiased estimate of the noise variance plus the local gradient;
    the pairs are binned by their mean level, each bin's variance is taken
    robustly (median absolute deviation: edges and atoms do not inflate it)
    and a non-negative linear model is fitted, as :func:`estimate_noise_model` does.

    Parameters
    ----------
    frame : numpy.ndarray
        2-D partial scan, non-finite = unsampled.
    bins : int
        Number of intensity bins.

    Returns
    -------
    tuple of float or None
        ``(gain, offset)`` in the frame's units, or None with fewer than
        :data:`MIN_SAMPLE_PAIRS` adjacent pairs (too few to say).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.noise import estimate_sampled_noise
    >>> rng = np.random.default_rng(0)
    >>> clean = np.tile(np.linspace(10, 100, 128), (128, 1))
    >>> noisy = rng.poisson(clean).astype(float)
    >>> noisy[rng.uniform(size=noisy.shape) > 0.3] = np.nan
    >>> gain, offset = estimate_sampled_noise(noisy)
    >>> bool(0.7 < gain < 1.3)
    True
    """

    f = np.asarray(frame, np.float64)
    diff, mean = _sample_differences(f, 3)  # second differences cancel linear structure
    if diff.size < MIN_SAMPLE_PAIRS:
        diff, mean = _sample_differences(f, 2)
    if diff.size < MIN_SAMPLE_PAIRS:
        return None
    fit = fit_variance_model(diff, mean, bins, min_count=8)
    return None if fit is None else (fit[0], max(fit[1], 0.0))


def _sample_differences(f, n):
    """Normalised differences (unit gain for white noise) of runs of ``n`` adjacent samples, and their means."""
    ok = np.isfinite(f)
    weights = {2: (np.array([1.0, -1.0]) / np.sqrt(2.0)), 3: (np.array([1.0, -2.0, 1.0]) / np.sqrt(6.0))}[n]
    diffs, means = [], []
    for dy, dx in ((0, 1), (1, 0)):
        h, w = f.shape[0] - dy * (n - 1), f.shape[1] - dx * (n - 1)
        views = [f[k * dy : k * dy + h, k * dx : k * dx + w] for k in range(n)]
        run = np.logical_and.reduce([ok[k * dy : k * dy + h, k * dx : k * dx + w] for k in range(n)])
        vals = [v[run] for v in views]
        diffs.append(sum(c * v for c, v in zip(weights, vals)))
        means.append(sum(vals) / n)
    return np.concatenate(diffs), np.concatenate(means)


def fit_variance_model(residuals, levels, bins, min_count):
    """Fit variance = gain * level + offset to noise residuals of unit gain, robustly.

    The residuals (e.g. normalised pixel differences, whose variance is the
    noise variance) are grouped into ``bins`` quantile bins of their local
    level; each bin's variance is taken robustly (median absolute deviation, so
    edges and atoms do not inflate it) and a non-negative linear model in the
    level above its floor (the detector's offset is unknown) is fitted by
    weighted least squares (Foi et al. 2008, in spirit).

    Returns
    -------
    (float, float) or None
        ``(gain, offset)``, or None when no bin holds ``min_count`` residuals.
    """
    from scipy.optimize import nnls

    edges = np.unique(np.quantile(levels, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, levels, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in range(max(len(edges) - 1, 1)):
        r = residuals[idx == b]
        if r.size >= min_count:
            mad = np.median(np.abs(r - np.median(r)))
            rows.append((np.median(levels[idx == b]), (1.4826 * mad) ** 2, np.sqrt(r.size)))
    if not rows:
        return None
    lv, var, w = map(np.asarray, zip(*rows))
    floor = float(levels.min())
    (gain, base), _ = nnls(np.stack([lv - floor, np.ones_like(lv)], axis=1) * w[:, None], var * w)
    return float(gain), float(base - gain * floor)
