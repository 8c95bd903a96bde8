"""Block means of frames and their inverse spread (array level).

Binning by ``factor`` x ``factor`` blocks serves the adaptive planners (complete a
cheaper, binned view of the scan so far and spread sigma back), the denoiser's
training (2 x 2-binned frames carry half their own noise) and the denoising
benchmark's references. Unsampled (NaN) pixels are left out of a block's mean, so
on a fully measured frame :func:`block_mean` is the plain block mean.
"""

from __future__ import annotations

import numpy as np

__all__ = ["block_mean", "block_spread"]


def block_mean(frame, factor):
    """Mean of the sampled pixels in ``factor`` x ``factor`` blocks (NaN where a block holds none).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.blocks import block_mean
    >>> block_mean(np.array([[1.0, np.nan], [3.0, np.nan]]), 2)
    array([[2.]])
    """
    h, w = (np.asarray(frame.shape) // factor) * factor
    blocks = np.asarray(frame, np.float64)[:h, :w].reshape(h // factor, factor, w // factor, factor)
    ok = np.isfinite(blocks)
    count = ok.sum(axis=(1, 3))
    total = np.where(ok, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def block_spread(small, shape, factor):
    """``small`` (a map of ``factor`` x ``factor`` blocks) spread back over a frame of ``shape``; the
    rows and columns beyond the last whole block repeat its edge.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.blocks import block_spread
    >>> block_spread(np.array([[1.0, 2.0]]), (3, 5), 2)
    array([[1., 1., 2., 2., 2.],
           [1., 1., 2., 2., 2.],
           [1., 1., 2., 2., 2.]])
    """
    if factor == 1:
        return small
    return np.pad(np.kron(small, np.ones((factor, factor))),
                  [(0, n - m * factor) for n, m in zip(shape, small.shape)], mode="edge")
