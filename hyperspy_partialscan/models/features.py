"""Network inputs for the completion generator, shared by training and inference.

A frame is normalised from its *sampled* values (robust percentiles), and four
channels are built: nearest-neighbour fill, linear (Delaunay) fill, scan mask and
distance to the nearest sample squashed by ``tanh(d / 8)``. The same function
prepares training crops and user frames, so both see identical statistics.
"""

from __future__ import annotations

import numpy as np

from ..inpainting import check_frame, linear_fill, nearest_fill

__all__ = ["INPUT_CHANNELS", "frame_scale", "normalised_noise", "noise_level", "completion_inputs", "DISTANCE_SCALE",
           "UNCERTAINTY_CHANNELS",
           "sampled_noise_sd", "uncertainty_inputs", "kept_completion"]

INPUT_CHANNELS = ("nearest", "linear", "mask", "distance")
DISTANCE_SCALE = 8.0
#: robust range of the sampled values used to normalise a frame
PERCENTILES = (0.5, 99.5)


def frame_scale(frame):
    """(offset, scale) mapping the frame's robust sampled range to [0, 1]."""
    vals = frame[np.isfinite(frame)]
    lo, hi = np.percentile(vals, PERCENTILES) if vals.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = float(vals.min()), float(vals.max())
    scale = hi - lo if hi > lo else 1.0
    return float(lo), float(scale)


def completion_inputs(frames):
    """Build the generator's input channels for a batch of partial scans.

    Parameters
    ----------
    frames : numpy.ndarray
        (N, H, W) partial scans, non-finite = unsampled.

    Returns
    -------
    inputs : numpy.ndarray
        (N, 4, H, W) float32.
    scales : list of (offset, scale)
        Each frame's normalisation, from :func:`frame_scale`.
    """
    frames = np.asarray(frames, dtype=np.float32)
    n = frames.shape[0]
    out = np.empty((n, len(INPUT_CHANNELS)) + frames.shape[1:], np.float32)
    scales = []
    for i, f in enumerate(frames):
        check_frame(f, i)
        f = np.where(np.isfinite(f), f, np.nan).astype(np.float32)
        lo, s = frame_scale(f)
        scales.append((lo, s))
        near, dist = nearest_fill(f, return_distance=True)
        out[i, 0] = (near - lo) / s
        out[i, 1] = (linear_fill(f, nearest=near) - lo) / s
        out[i, 2] = np.isfinite(f)
        out[i, 3] = np.tanh(dist / DISTANCE_SCALE)
    return out, scales


#: multiplier of the noise-level channel (keeps it on the order of the image channel)
NOISE_MAP_GAIN = 4.0
#: standard deviation (px) of the Gaussian smoothing of the frame the noise-level channel is computed from
NOISE_MAP_SMOOTHING = 2.0


def noise_map(norm, scale, variance_model=None, sigma=None, lo=0.0):
    """Noise-level channel (normalised units times :data:`NOISE_MAP_GAIN`) for one frame.

    Parameters
    ----------
    norm : numpy.ndarray
        The frame after normalisation ``(x - lo) / scale``.
    scale : float
        The normalisation scale (data units per normalised unit).
    variance_model : dict, optional
        HyperSpy's ``Noise_properties.Variance_linear_model`` in data units:
        variance = gain_factor * (x - offset) + gain_offset (Poisson shot noise
        with known gain, e.g. from the dose; ``offset``, the data value of zero
        signal, defaults to 0). Gives a per-pixel map.
    sigma : float, optional
        Known noise standard deviation in data units (a constant map).
    lo : float
        The normalisation offset (data value of normalised zero).

    Without either, the signal-dependent noise model is estimated blindly from
    the frame (:func:`~hyperspy_partialscan.noise.estimate_noise_model`)
    and gives a per-pixel map as a known model does.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.models.features import noise_map, NOISE_MAP_GAIN
    >>> m = noise_map(np.full((8, 8), 0.5), 100.0, {"gain_factor": 2.0, "gain_offset": 0.0})
    >>> round(float(m[0, 0] / NOISE_MAP_GAIN), 6)  # sqrt(2 * 50) / 100
    0.1
    """
    from scipy import ndimage

    from ..noise import estimate_noise_model

    if variance_model is None and sigma is None:
        gain, base = estimate_noise_model(norm)  # in normalised units: data scale 1, offset 0
        variance_model, scale, lo = {"gain_factor": gain, "gain_offset": base}, 1.0, 0.0
    gain, offset, gain_offset = normalised_noise(lo, scale, variance_model, sigma)
    smoothed = ndimage.gaussian_filter(norm, NOISE_MAP_SMOOTHING) if gain else np.zeros_like(norm)
    return noise_level(smoothed, gain, offset, gain_offset).astype(np.float32)


def noise_level(smoothed, gain, offset=0.0, gain_offset=0.0):
    """The noise-level channel from the smoothed normalised frame s: ``NOISE_MAP_GAIN √(gain (s - offset)₊ + b)``.

    ``smoothed`` is a NumPy array or a torch tensor (the same formula for
    :func:`noise_map` and for :func:`~hyperspy_partialscan.training.pure_per_item`'s
    perturbed frames); the model (``gain``, ``offset``, ``gain_offset`` b) is in
    normalised units (:func:`normalised_noise`).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.models.features import noise_level, NOISE_MAP_GAIN
    >>> round(float(noise_level(np.array([0.6]), 0.1, 0.1)[0] / NOISE_MAP_GAIN) ** 2, 6)  # 0.1 * (0.6 - 0.1)
    0.05
    """
    return NOISE_MAP_GAIN * ((smoothed - offset).clip(0) * gain + gain_offset).clip(0) ** 0.5


def normalised_noise(lo, scale, variance_model=None, sigma=None):
    """A frame's noise model in the units of its normalisation ``(x - lo) / scale``.

    Parameters
    ----------
    lo, scale : float
        The frame's normalisation (:func:`frame_scale`).
    variance_model : dict, optional
        ``gain_factor``, ``gain_offset`` and ``offset`` in data units
        (variance = gain_factor * (x - offset) + gain_offset, see :func:`noise_map`).
    sigma : float, optional
        Known Gaussian noise standard deviation in data units (used without a
        variance model).

    Returns
    -------
    tuple of float
        ``(gain, offset, gain_offset)``: variance = gain * (x - offset) +
        gain_offset in normalised units (gain: one count's step; offset: the
        normalised value of zero signal).

    Examples
    --------
    >>> from hyperspy_partialscan.models.features import normalised_noise
    >>> normalised_noise(10.0, 100.0, {"gain_factor": 2.0, "gain_offset": 400.0, "offset": 20.0})
    (0.02, 0.1, 0.04)
    >>> normalised_noise(0.0, 10.0, sigma=1.0)
    (0.0, 0.0, 0.01)
    """
    if variance_model is None:
        if sigma is None:
            raise ValueError("normalised_noise needs a variance_model or a sigma")
        return 0.0, 0.0, float(sigma) ** 2 / scale**2
    return (float(variance_model.get("gain_factor", 1.0)) / scale,
            (float(variance_model.get("offset", 0.0)) - lo) / scale,
            float(variance_model.get("gain_offset", 0.0)) / scale**2)


def denoising_inputs(frames, variance_model=None, sigma=None):
    """Inputs of the denoising network for a batch of noisy frames (N, H, W).

    ``variance_model``: one model for all frames (dict, see :func:`noise_map`),
    one per frame (a sequence of dicts or None), or None (estimated blindly
    from each frame). Returns (N, 2, H, W) float32 inputs and the per-frame
    (offset, scale). Non-finite pixels are not allowed (complete partial scans
    first).
    """
    frames = np.asarray(frames, np.float32)
    out = np.empty((frames.shape[0], 2) + frames.shape[1:], np.float32)
    models = [variance_model] * len(frames) if variance_model is None or isinstance(variance_model, dict) \
        else list(variance_model)
    scales = []
    for i, f in enumerate(frames):
        if not np.isfinite(f).all():
            raise ValueError(f"frame {i} has NaN or infinite pixels: complete the partial scan before denoising")
        lo, s = frame_scale(f)
        scales.append((lo, s))
        out[i, 0] = (f - lo) / s
        out[i, 1] = noise_map(out[i, 0], s, models[i], sigma, lo)
    return out, scales


#: channels of the uncertainty network: the generator's inputs, the completion and the noise level
UNCERTAINTY_CHANNELS = INPUT_CHANNELS + ("completion", "noise_level")


def sampled_noise_sd(completion, scale, variance_model=None):
    """Noise standard deviation of a measurement at each pixel, in normalised units.

    Parameters
    ----------
    completion : numpy.ndarray
        The completed frame in data units (the expected signal at each pixel).
    scale : float
        The frame's normalisation scale (data units per normalised unit).
    variance_model : dict or None
        ``gain_factor`` and ``gain_offset`` (variance = gain_factor * signal +
        gain_offset, data units, signal counted from ``offset``, default 0;
        read as :func:`normalised_noise` reads it); None: no noise (zeros).

    Returns
    -------
    numpy.ndarray
        float32, the completion's shape.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.models.features import sampled_noise_sd
    >>> sampled_noise_sd(np.full((1, 2), 100.0), 10.0, {"gain_factor": 1.0, "gain_offset": 0.0})
    array([[1., 1.]], dtype=float32)
    """
    if variance_model is None:
        return np.zeros(np.shape(completion), np.float32)
    level = noise_level(np.asarray(completion, np.float64) / scale, *normalised_noise(0.0, scale, variance_model))
    return (level / NOISE_MAP_GAIN).astype(np.float32)


def kept_completion(inputs, completion_norm):
    """The normalised completion (N, H, W) with the measured samples (channel 0 where the mask is set) put back.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.models.features import completion_inputs, kept_completion
    >>> inputs, _ = completion_inputs(np.array([[[0.0, np.nan], [1.0, 2.0]]]))
    >>> kept = kept_completion(inputs, np.full((1, 2, 2), 9.0))
    >>> float(kept[0, 0, 1]), bool(np.array_equal(kept[0][inputs[0, 2] > 0.5], inputs[0, 0][inputs[0, 2] > 0.5]))
    (9.0, True)
    """
    return np.where(inputs[:, 2] > 0.5, inputs[:, 0], completion_norm).astype(np.float32)


def uncertainty_inputs(inputs, completion_norm, noise_sd_norm):
    """Inputs of the uncertainty network (N, 6, H, W).

    Parameters
    ----------
    inputs : numpy.ndarray
        (N, 4, H, W) generator inputs (:func:`completion_inputs`).
    completion_norm : numpy.ndarray
        (N, H, W) the completion, normalised as the inputs.
    noise_sd_norm : numpy.ndarray
        (N, H, W) measurement noise standard deviation, normalised units
        (:func:`sampled_noise_sd`); scaled by :data:`NOISE_MAP_GAIN` here.

    Returns
    -------
    numpy.ndarray
        float32.
    """
    return np.concatenate([np.asarray(inputs, np.float32), np.asarray(completion_norm, np.float32)[:, None],
                           NOISE_MAP_GAIN * np.asarray(noise_sd_norm, np.float32)[:, None]], axis=1)
