"""Fixed random crops of frames, min/max normalised to [0, 1], for validation and calibration sets."""

from __future__ import annotations

import numpy as np

__all__ = ["normalised_crops"]


def normalised_crops(frames, crop, per_frame, rng, *, shrink=False):
    """Yield up to ``per_frame`` random ``crop`` x ``crop`` crops of each frame, normalised to [0, 1].

    Frames smaller than the crop are skipped (with ``shrink``, cropped to a
    square of their smaller side instead), and so are flat crops. A generator: a caller that
    draws from ``rng`` between crops (e.g. to add noise or a scan path) keeps
    its draws interleaved with the crop positions, so a fixed seed gives fixed
    sets.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.training.crops import normalised_crops
    >>> frames = [np.arange(64.0).reshape(8, 8), np.ones((8, 8)), np.zeros((2, 2))]
    >>> crops = list(normalised_crops(frames, 4, 2, np.random.default_rng(0)))
    >>> len(crops), crops[0].dtype, float(crops[0].min()), float(crops[0].max())
    (2, dtype('float32'), 0.0, 1.0)
    >>> [c.shape for c in normalised_crops(frames[:1], 16, 1, np.random.default_rng(0), shrink=True)]
    [(8, 8)]
    """
    for f in frames:
        side = min(crop, *f.shape) if shrink else crop
        if min(f.shape) < side:
            continue
        for _ in range(per_frame):
            r, q = rng.integers(0, f.shape[0] - side + 1), rng.integers(0, f.shape[1] - side + 1)
            x = f[r : r + side, q : q + side].astype(np.float32)
            lo, hi = float(x.min()), float(x.max())
            if hi - lo >= 1e-6:
                yield (x - lo) / (hi - lo)
