"""Scan simulation: read a full frame along a scan path, with a realistic noise model.

Pure array functions; the signal-level wrapper is
:func:`hyperspy_partialscan.to_partial_scan`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ._validation import check_number
from .paths._base import ScanPath, _rasterise, _smooth_walk

__all__ = ["NoiseModel", "sample_frame", "frame_rng", "path_rng", "simulated_variance_model"]


@dataclass(frozen=True)
class NoiseModel:
    """Acquisition noise and scan distortions of a simulated partial scan.

    All fields default to "off", which gives a clean partial scan: the frame's
    own values at the sampled pixels and NaN elsewhere.

    Parameters
    ----------
    dose : float or None
        Electrons per probe position at full scale (the frame's maximum; zero
        signal is intensity 0, or the frame's minimum if it has negative values),
        scaled by the position's relative dwell.
        Signals become Poisson counts: the variance of a sample equals its mean
        in electrons. ``None`` disables shot noise.
    detector_sigma : float
        Standard deviation of additive Gaussian detector noise, as a fraction of
        the frame's full-scale intensity above its zero level (see ``dose``).
    position_jitter : float
        Standard deviation (pixels) of independent random probe-position errors.
    line_jitter : float
        Standard deviation (pixels) of smooth, time-correlated probe-position
        errors (scan-coil jitter); correlated over ``jitter_correlation`` positions.
    jitter_correlation : float
        Correlation length of ``line_jitter``, in probe positions.
    drift : tuple of float
        Total sample drift (rows, columns) in pixels over the whole scan, linear
        in acquisition time.
    slow_pixel_attenuation : float
        Fractional signal loss on pixels the probe traverses only partially or
        quickly (detector/amplifier bandwidth): a pixel whose accumulated dwell
        ``t`` is below one position's nominal dwell is read as
        ``zero + (value - zero) * (1 - slow_pixel_attenuation * (1 - t))``
        (``zero``: the zero-signal level, see ``dose``).

    Raises
    ------
    ValueError
        If a field is not a finite real number in its range (``dose`` > 0 or
        None, ``jitter_correlation`` > 0, ``slow_pixel_attenuation`` in [0, 1],
        the others >= 0) or ``drift`` is not two finite numbers.

    Notes
    -----
    Position errors displace where the sample is *read*; the value is recorded
    at the nominal position, as in a real distorted scan.

    Examples
    --------
    >>> noise = NoiseModel(dose=100, drift=[1, 0])
    >>> noise.dose, noise.drift, noise.is_clean
    (100.0, (1.0, 0.0), False)
    >>> NoiseModel.coerce({"detector_sigma": 0.01}) == NoiseModel(detector_sigma=0.01)
    True
    >>> NoiseModel(dose=0)
    Traceback (most recent call last):
    ...
    ValueError: dose must be a finite number > 0 or None, got 0
    """

    dose: float | None = None
    detector_sigma: float = 0.0
    position_jitter: float = 0.0
    line_jitter: float = 0.0
    jitter_correlation: float = 50.0
    drift: tuple = (0.0, 0.0)
    slow_pixel_attenuation: float = 0.0

    def __post_init__(self) -> None:
        dose = check_number("dose", self.dose, low=0, low_inclusive=False, allow_none=True)
        object.__setattr__(self, "dose", dose)
        for name in ("detector_sigma", "position_jitter", "line_jitter", "slow_pixel_attenuation"):
            high = 1 if name == "slow_pixel_attenuation" else None
            object.__setattr__(self, name, check_number(name, getattr(self, name), low=0, high=high))
        corr = check_number("jitter_correlation", self.jitter_correlation, low=0, low_inclusive=False)
        object.__setattr__(self, "jitter_correlation", corr)
        try:
            drift = tuple(self.drift)
        except TypeError:
            raise ValueError(f"drift must be (rows, columns) in pixels, got {self.drift!r}") from None
        if len(drift) != 2:
            raise ValueError(f"drift must be (rows, columns) in pixels, got {self.drift!r}")
        object.__setattr__(self, "drift", tuple(check_number("drift", d) for d in drift))

    @property
    def is_clean(self) -> bool:
        """True when the model adds no noise or distortion (``jitter_correlation`` alone has no effect)."""
        return (
            self.dose is None
            and not self.detector_sigma
            and not self.position_jitter
            and not self.line_jitter
            and not any(self.drift)
            and not self.slow_pixel_attenuation
        )

    def as_dict(self) -> dict:
        """Parameters as a plain dictionary (for metadata)."""
        d = asdict(self)
        d["drift"] = list(self.drift)
        return d

    @classmethod
    def coerce(cls, noise: NoiseModel | dict | None) -> NoiseModel:
        """Accept None, a NoiseModel or a dict of its fields."""
        if noise is None:
            return cls()
        if isinstance(noise, cls):
            return noise
        if isinstance(noise, dict):
            unknown = set(noise) - set(cls.__dataclass_fields__)
            if unknown:
                known = sorted(cls.__dataclass_fields__)
                raise ValueError(f"unknown noise parameter(s) {sorted(unknown)}; known: {known}")
            return cls(**noise)
        raise TypeError(f"noise must be None, a dict or a NoiseModel, not {type(noise).__name__}")


def frame_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Independent, reproducible generator for frame ``index`` of a stack.

    Parameters
    ----------
    seed : int
        Non-negative seed of the whole stack.
    index : int
        Flat navigation index of the frame.
    stream : int
        Independent stream for another use of the same frame (0: the scan
        path, 1: the noise), so no two uses share random numbers.

    Returns
    -------
    numpy.random.Generator

    Examples
    --------
    >>> a, b = frame_rng(7, 2).random(), frame_rng(7, 2).random()
    >>> a == b, a == frame_rng(7, 3).random(), a == frame_rng(7, 2, stream=1).random()
    (True, False, False)
    """
    key = (int(index),) if stream == 0 else (int(index), int(stream))
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=key))


def path_rng(seed: int, index: int, vary_per_frame: bool) -> np.random.Generator | int:
    """What :func:`~hyperspy_partialscan.paths.generate_path` is given for the path of frame ``index``.

    The one rule for a stack's scan paths: with ``vary_per_frame`` every frame
    has its own path, drawn from :func:`frame_rng` ``(seed, index)``; without
    it every frame shares the path seeded by ``seed`` itself (``index`` is
    then ignored).

    Parameters
    ----------
    seed, index : int
        As :func:`frame_rng`: the stack's seed and the frame's flat navigation index.
    vary_per_frame : bool
        Whether each frame has its own path.

    Returns
    -------
    numpy.random.Generator or int
        A fresh generator for frame ``index``, or ``seed`` unchanged.

    Examples
    --------
    >>> from hyperspy_partialscan.paths import generate_path
    >>> path_rng(5, 3, False)
    5
    >>> def positions(index, vary):
    ...     return generate_path("random", (16, 16), 0.1, path_rng(5, index, vary)).positions
    >>> bool((positions(0, False) == positions(3, False)).all())
    True
    >>> bool((positions(3, True) == generate_path("random", (16, 16), 0.1, frame_rng(5, 3)).positions).all())
    True
    >>> bool((positions(0, True) == positions(3, True)).all())
    False
    """
    return frame_rng(seed, index) if vary_per_frame else seed


def sample_frame(
    frame: np.ndarray,
    path: ScanPath,
    noise: NoiseModel | dict | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Read ``frame`` along ``path`` and return the partial scan.

    Parameters
    ----------
    frame : numpy.ndarray
        2-D real image (the ground truth).
    path : ScanPath
        Probe positions; ``path.shape`` must equal ``frame.shape``.
    noise : NoiseModel, optional
        Noise and distortion model (default: clean).
    rng : numpy.random.Generator, optional
        Random generator for the noise.

    Returns
    -------
    numpy.ndarray
        float32 frame with measured values at sampled pixels and NaN elsewhere.
        Several positions falling in one pixel are averaged, weighted by dwell.

    Raises
    ------
    ValueError
        If the frame's shape is not the path's.

    Examples
    --------
    >>> from hyperspy_partialscan.paths import generate_path
    >>> frame = np.arange(16.0).reshape(4, 4)
    >>> partial = sample_frame(frame, generate_path("grid", (4, 4), 0.25, 0, spacing=2))
    >>> partial
    array([[nan, nan, nan, nan],
           [ 4., nan,  6., nan],
           [nan, nan, nan, nan],
           [12., nan, 14., nan]], dtype=float32)
    >>> noisy = sample_frame(frame, generate_path("grid", (4, 4), 0.25, 0, spacing=2), {"dose": 10}, rng=0)
    >>> bool((np.isnan(noisy) == np.isnan(partial)).all())
    True
    """
    frame = np.asarray(frame)
    if frame.shape != tuple(path.shape):
        raise ValueError(f"frame shape {frame.shape} does not match the path's shape {path.shape}")
    noise = NoiseModel.coerce(noise)
    rng = np.random.default_rng(rng)
    pos = path.positions
    dwell = path.dwell
    out = np.full(frame.shape, np.nan, dtype=np.float32)
    if len(pos) == 0:
        return out
    # the detector records each position in the pixel it falls in; the sample is
    # read at that pixel's centre, displaced by any position error
    read = np.rint(pos)
    n = len(pos)
    distorted = bool(noise.position_jitter or noise.line_jitter or any(noise.drift))
    if noise.position_jitter:
        read = read + rng.normal(0, noise.position_jitter, read.shape)
    if noise.line_jitter:
        for ax in range(2):
            read[:, ax] += _smooth_walk(rng, n, noise.line_jitter, noise.jitter_correlation)
    if any(noise.drift):
        read = read + np.linspace(0, 1, n)[:, None] * np.asarray(noise.drift)[None, :]
    f64 = frame.astype(np.float64, copy=False)
    if distorted:
        values = ndimage.map_coordinates(f64, read.T, order=1, mode="nearest")
    else:
        idx = np.clip(read.astype(np.int64), 0, np.array(frame.shape) - 1)
        values = f64[idx[:, 0], idx[:, 1]]
    if noise.dose is not None or noise.detector_sigma or noise.slow_pixel_attenuation:
        zero, full = _intensity_scale(f64)
    if noise.dose is not None or noise.detector_sigma:
        scaled = (values - zero) / (full - zero)
        if noise.dose is not None:
            lam = noise.dose * dwell
            scaled = rng.poisson(np.clip(scaled, 0, None) * lam) / lam
        if noise.detector_sigma:
            scaled = scaled + rng.normal(0, noise.detector_sigma, scaled.shape)
        values = scaled * (full - zero) + zero
    rows, cols, inside = _rasterise(pos, frame.shape, return_inside=True)
    values, w = values[inside], dwell[inside]
    flat = rows * frame.shape[1] + cols
    size = frame.size
    wsum = np.bincount(flat, weights=w, minlength=size)
    vsum = np.bincount(flat, weights=w * values, minlength=size)
    hit = wsum > 0
    mean = np.zeros(size)
    mean[hit] = vsum[hit] / wsum[hit]
    if noise.slow_pixel_attenuation:
        t = np.clip(wsum[hit], 0, 1)
        mean[hit] = zero + (mean[hit] - zero) * (1 - noise.slow_pixel_attenuation * (1 - t))
    out.ravel()[hit] = mean[hit]
    return out


def simulated_variance_model(frame, dose, detector_sigma=0.0):
    """The variance model (data units) of a frame measured with a :class:`NoiseModel`'s dose and detector noise.

    Parameters
    ----------
    frame : numpy.ndarray
        The frame (a partial scan, its completion or a full frame; non-finite
        values are ignored): its intensity scale gives the simulation's zero
        and full scale (:func:`_intensity_scale`).
    dose : float or None
        Electrons per pixel at full scale (None: no shot noise).
    detector_sigma : float
        Gaussian detector noise, fraction of full scale.

    Returns
    -------
    dict
        ``gain_factor`` and ``gain_offset`` (variance = gain_factor * (value -
        offset) + gain_offset) and ``offset``, the data value of zero signal.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.simulate import simulated_variance_model
    >>> simulated_variance_model(np.array([[0.0, np.nan, 200.0]]), 100.0)
    {'gain_factor': 2.0, 'gain_offset': 0.0, 'offset': 0.0}
    """
    zero, full = _intensity_scale(np.asarray(frame))  # the simulation's own zero and full scale
    full -= zero
    return {"gain_factor": full / dose if dose else 0.0, "gain_offset": (float(detector_sigma) * full) ** 2,
            "offset": zero}


def _intensity_scale(frame):
    """Intensities of zero signal and of full scale (``NoiseModel.dose`` electrons).

    Zero is 0 for non-negative frames (detector counts), else the frame minimum;
    full scale is the frame maximum (both over the finite values).

    Parameters
    ----------
    frame : numpy.ndarray
        The frame.

    Returns
    -------
    zero, full : float
    """
    finite = frame[np.isfinite(frame)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    zero = 0.0 if lo >= 0 else lo
    full = hi if hi > zero else zero + 1.0
    return zero, full
