"""Uniformly random pixels: the scan path of compressed-sensing acquisition."""

from __future__ import annotations

import numpy as np

from .._docstrings import fill_doc
from .._validation import check_choice
from ._base import ScanPath


@fill_doc
def random(shape: tuple[int, int], coverage: float, rng: np.random.Generator, *, order: str = "raster") -> ScanPath:
    """Uniformly random pixels (without repetition).

    At least one pixel is scanned.

    Parameters
    ----------
    {path_shape_coverage}
    rng : numpy.random.Generator
        Random generator (pixel choice).
    order : {{"raster", "random"}}
        Acquisition order: raster order (minimal probe travel) or random.

    Returns
    -------
    ScanPath
        Options: the acquisition ``order``.

    Examples
    --------
    >>> p = random((10, 10), 0.2, np.random.default_rng(0))
    >>> len(p.positions), p.coverage
    (20, 0.2)
    >>> random((10, 10), 0.001, np.random.default_rng(0)).positions.shape  # at least one pixel
    (1, 2)
    """
    check_choice("order", order, ("raster", "random"))
    n_pix = shape[0] * shape[1]
    n = max(int(round(coverage * n_pix)), 1)
    flat = rng.choice(n_pix, size=n, replace=False)
    if order == "raster":
        flat = np.sort(flat)
    pos = np.stack(np.unravel_index(flat, shape), axis=1).astype(float)
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "random", {"order": order})
