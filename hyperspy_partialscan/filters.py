"""Classical denoising filters of single frames (array level).

Each takes a 2-D frame and returns a float32 frame; parameters not given are
estimated from the frame's noise level (:func:`~.noise.estimate_sigma`). The
signal-level entry point is :func:`hyperspy_partialscan.denoise`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .noise import estimate_sigma

__all__ = ["gaussian_filter", "nl_means", "tv", "wiener", "CLASSICAL_DENOISERS", "denoise_frame"]


def gaussian_filter(frame, sigma=None):
    """Gaussian filter; ``sigma`` (px) defaults to a value chosen from the noise level.

    The default grows with the estimated noise-to-range ratio: 0.5 px for clean
    frames up to 3 px for very noisy ones.
    """
    frame = np.asarray(frame, np.float32)
    if sigma is None:
        rng_ = float(np.percentile(frame, 99.5) - np.percentile(frame, 0.5)) or 1.0
        nsr = estimate_sigma(frame) / rng_
        sigma = float(np.clip(0.5 + 12 * nsr, 0.5, 3.0))
    return ndimage.gaussian_filter(frame, sigma).astype(np.float32)


def nl_means(frame, h=None, sigma=None, patch_size=5, patch_distance=6):
    """Non-local means (scikit-image), with the noise sigma estimated when not given."""
    from skimage.restoration import denoise_nl_means

    frame = np.asarray(frame, np.float64)
    sigma = estimate_sigma(frame) if sigma is None else float(sigma)
    h = 0.8 * sigma if h is None else float(h)
    return denoise_nl_means(frame, patch_size=patch_size, patch_distance=patch_distance, h=h, sigma=sigma,
                            fast_mode=True, preserve_range=True).astype(np.float32)


def tv(frame, weight=None):
    """Total-variation denoising (Chambolle); ``weight`` defaults to the estimated sigma."""
    from skimage.restoration import denoise_tv_chambolle

    frame = np.asarray(frame, np.float64)
    weight = estimate_sigma(frame) if weight is None else float(weight)
    return denoise_tv_chambolle(frame, weight=max(weight, 1e-12)).astype(np.float32)


def wiener(frame, window=32, hop=8, variance_model=None):
    """Two-pass empirical Wiener filter on overlapping windows, with signal-dependent noise.

    Keeps the strong Fourier components of each ``window`` x ``window`` tile
    (lattice reflections) and removes the noise between them; see
    :func:`~hyperspy_partialscan.models.wiener.sliding_wiener`. The noise
    variance per pixel is ``gain * s + offset`` with ``s`` the frame smoothed by
    a 2 px Gaussian (clipped at 0), as for the denoising network
    (:func:`~hyperspy_partialscan.models.features.noise_map`);
    ``variance_model`` ``(gain, offset)`` in the frame's units defaults to the
    blind Poisson-Gaussian estimate
    (:func:`~hyperspy_partialscan.noise.estimate_noise_model`).
    """
    import torch

    from .models.features import NOISE_MAP_GAIN, noise_map
    from .models.wiener import sliding_wiener

    frame = np.asarray(frame, np.float32)
    model = None if variance_model is None else dict(zip(("gain_factor", "gain_offset"), map(float, variance_model)))
    # the network's noise-level channel (blind estimate when no model is given) is the noise sd times its gain
    var = (noise_map(frame, 1.0, model) / NOISE_MAP_GAIN) ** 2
    with torch.no_grad():
        y = sliding_wiener(torch.from_numpy(frame)[None, None], torch.from_numpy(var)[None, None], int(window),
                           int(hop))
    return y[0, 0].numpy().astype(np.float32)


CLASSICAL_DENOISERS = {"gaussian": gaussian_filter, "nl_means": nl_means, "tv": tv, "wiener": wiener}


def denoise_frame(frame, method, **params):
    """Denoise one frame with a classical filter by name."""
    try:
        func = CLASSICAL_DENOISERS[method]
    except KeyError:
        choices = ", ".join(CLASSICAL_DENOISERS)
        raise ValueError(f"unknown classical denoiser {method!r}; choose one of {choices}") from None
    return func(frame, **params)
