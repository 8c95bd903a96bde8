"""Network inputs for the completion generator, shared by training and inference.

A frame is normalised from its *sampled* values (robust percentiles), and four
channels are built: nearest-neighbour fill, linear (Delaunay) fill, scan mask and
distance to the nearest sample squashed by ``tanh(d / 8)``. The same function
prepares training crops and user frames, so both see identical statistics.
"""

from __future__ import annotations

import numpy as np

from ..inpainting import check_frame, linear_fill, nearest_fill

__all__ = ["INPUT_CHANNELS", "frame_scale", "completion_inputs", "DISTANCE_SCALE"]

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


def completion_inputs(frames, scales=None):
    """Build the generator's input channels for a batch of partial scans.

    Parameters
    ----------
    frames : numpy.ndarray
        (N, H, W) partial scans, non-finite = unsampled.
    scales : sequence of (offset, scale), optional
        Normalisation per frame; computed with :func:`frame_scale` if omitted.

    Returns
    -------
    inputs : numpy.ndarray
        (N, 4, H, W) float32.
    scales : list of (offset, scale)
    """
    frames = np.asarray(frames, dtype=np.float32)
    n = frames.shape[0]
    out = np.empty((n, len(INPUT_CHANNELS)) + frames.shape[1:], np.float32)
    scales = list(scales) if scales is not None else [None] * n
    for i, f in enumerate(frames):
        check_frame(f, i)
        f = np.where(np.isfinite(f), f, np.nan).astype(np.float32)
        if scales[i] is None:
            scales[i] = frame_scale(f)
        lo, s = scales[i]
        near, dist = nearest_fill(f, return_distance=True)
        out[i, 0] = (near - lo) / s
        out[i, 1] = (linear_fill(f, nearest=near) - lo) / s
        out[i, 2] = np.isfinite(f)
        out[i, 3] = np.tanh(dist / DISTANCE_SCALE)
    return out, scales
