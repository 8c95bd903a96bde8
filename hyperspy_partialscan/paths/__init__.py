"""Scan paths: ordered probe positions for partial scans.

Every path is a pure function ``f(shape, coverage, rng, **options) -> ScanPath``
registered in :data:`PATHS`. A :class:`ScanPath` holds the ordered sub-pixel probe
positions (row, column; in acquisition order), the relative dwell time at each
position and the frame shape; its :attr:`ScanPath.mask` rasterises the positions
to the pixels that receive signal. Paths are deterministic for a given
:class:`numpy.random.Generator` state.

Coverage is the fraction of pixels that receive signal. Paths whose natural
parameter is not the coverage itself (the arm gap of a spiral, the length of a
Lissajous curve, ...) tune that parameter so that the *measured* coverage of the
rasterised mask matches the request.

Modules: :mod:`._base` (:class:`ScanPath` and shared helpers), :mod:`._tune`
(coverage tuning), one module per path family (:mod:`.spiral`, :mod:`.grids`,
:mod:`.random_points`, :mod:`.lissajous`, :mod:`.line_hop`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._validation import check_shape, validate_coverage
from ._base import ScanPath
from .grids import grid, jittered_grid, lines
from .line_hop import line_hop
from .lissajous import lissajous
from .random_points import random
from .spiral import spiral

__all__ = [
    "ScanPath", "PATHS", "generate_path", "validate_coverage", "path_names",
    "spiral", "grid", "jittered_grid", "random", "lissajous", "line_hop", "lines",
]

#: The path families by name, in the order :func:`path_names` lists them.
PATHS: dict[str, Callable[..., ScanPath]] = {
    "spiral": spiral,
    "grid": grid,
    "jittered_grid": jittered_grid,
    "random": random,
    "lissajous": lissajous,
    "line_hop": line_hop,
    "lines": lines,
}


def path_names() -> tuple[str, ...]:
    """Names of the available scan paths.

    Returns
    -------
    tuple of str
        The keys of :data:`PATHS`.

    Examples
    --------
    >>> path_names()
    ('spiral', 'grid', 'jittered_grid', 'random', 'lissajous', 'line_hop', 'lines')
    """
    return tuple(PATHS)


def generate_path(
    name: str,
    shape: tuple[int, int],
    coverage: float,
    rng: np.random.Generator | int | None = None,
    **options,
) -> ScanPath:
    """Generate a scan path by name.

    Parameters
    ----------
    name : str
        One of :func:`path_names`.
    shape : tuple of int
        Frame shape (rows, columns).
    coverage : float
        Requested fraction of sampled pixels, in (0, 1].
    rng : numpy.random.Generator or int or None
        Random generator or seed.
    **options
        Path-specific options (see each path function).

    Returns
    -------
    ScanPath

    Raises
    ------
    ValueError
        Unknown path, invalid coverage, shape or option value, or a coverage
        the path cannot reach with these options.
    TypeError
        Unknown option.

    Examples
    --------
    >>> p = generate_path("grid", (64, 64), 0.25, seed := 3)
    >>> p.name, p.shape, p.coverage
    ('grid', (64, 64), 0.25)
    >>> bool((generate_path("grid", (64, 64), 0.25, seed).positions == p.positions).all())
    True
    >>> generate_path("spiral", (64, 64), 0.1, 0, colour="red")
    Traceback (most recent call last):
    ...
    TypeError: invalid option for scan path 'spiral': spiral() got an unexpected keyword argument 'colour'
    """
    if name not in PATHS:
        raise ValueError(f"unknown scan path {name!r}; choose one of {', '.join(PATHS)}")
    coverage = validate_coverage(coverage)
    shape = check_shape(shape)
    rng = np.random.default_rng(rng)
    try:
        return PATHS[name](shape, coverage, rng, **options)
    except TypeError as err:
        raise TypeError(f"invalid option for scan path {name!r}: {err}") from None
