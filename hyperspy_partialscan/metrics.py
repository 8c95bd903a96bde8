"""Image-quality measures used by the demo, the benchmarks and training.

Pure array functions, in the spirit of :mod:`skimage.metrics`: an estimate is
compared with a reference of the same shape; nothing here imports PyTorch.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = ["BLUR_SIGMA", "blur_target", "rmse", "rmse_percent", "psnr"]

#: standard deviation (pixels) of the Gaussian blur of the seeds' training target
BLUR_SIGMA = 2.5


def blur_target(frame: ArrayLike) -> np.ndarray:
    """The seeds' training and evaluation target: a Gaussian blur, 5x5 kernel, sigma 2.5 px.

    Parameters
    ----------
    frame : array_like
        2-D image (or a stack whose last two axes are the image axes when
        called per frame).

    Returns
    -------
    numpy.ndarray
        The blurred image (reflecting boundaries), same shape and float dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.metrics import blur_target
    >>> img = np.zeros((9, 9)); img[4, 4] = 1.0
    >>> b = blur_target(img)
    >>> bool(b[4, 4] < 1.0), round(float(b.sum()), 6)
    (True, 1.0)
    """
    return ndimage.gaussian_filter(frame, BLUR_SIGMA, truncate=0.8, mode="reflect")


def rmse(estimate: ArrayLike, reference: ArrayLike) -> float:
    """Root-mean-square difference, in the data's units (float64 arithmetic).

    Examples
    --------
    >>> from hyperspy_partialscan.metrics import rmse
    >>> rmse([1.0, 2.0], [1.0, 4.0])
    1.4142135623730951
    """
    d = np.asarray(estimate, np.float64) - np.asarray(reference, np.float64)
    return float(np.sqrt(np.mean(d * d)))


def rmse_percent(estimate: ArrayLike, reference: ArrayLike, data_range: float | None = 1.0) -> float:
    """Root-mean-square error in percent of ``data_range``.

    Parameters
    ----------
    estimate, reference : array_like
        Same shape.
    data_range : float or None
        The intensity range the error is expressed against: 1.0 for images
        normalised to [0, 1] (training and benchmarks); None uses the
        reference's own range (max - min), and gives NaN for a flat reference.

    Examples
    --------
    >>> from hyperspy_partialscan.metrics import rmse_percent
    >>> round(rmse_percent([0.1, 0.5], [0.0, 0.5]), 4)
    7.0711
    >>> round(rmse_percent([10.0, 30.0], [10.0, 20.0], data_range=None), 4)
    70.7107
    """
    if data_range is None:
        ref = np.asarray(reference, np.float64)
        span = float(ref.max() - ref.min())
        if span <= 0:
            return float("nan")
        data_range = span
    return 100.0 * rmse(estimate, reference) / float(data_range)


def psnr(estimate: ArrayLike, clean: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (an exact match is capped at 200 dB for ``data_range`` 1).

    Examples
    --------
    >>> from hyperspy_partialscan.metrics import psnr
    >>> round(psnr([0.0, 0.1], [0.0, 0.0]), 2)
    23.01
    """
    mse = float(np.mean((np.asarray(estimate, np.float64) - np.asarray(clean, np.float64)) ** 2))
    return float(10 * np.log10(data_range**2 / max(mse, 1e-20)))
