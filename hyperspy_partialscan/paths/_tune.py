"""Tune a path's natural parameter (arm gap, line period, length) to a requested coverage."""

from __future__ import annotations

import numpy as np

from ._base import _rasterise


def _measured_coverage(positions, shape):
    """Fraction of the frame's pixels that ``positions`` fall in (repeats count once)."""
    rows, cols = _rasterise(positions, shape)
    flat = np.unique(rows * shape[1] + cols)
    return flat.size / (shape[0] * shape[1])


def _tune(build, param0, coverage, shape, exponent=-1.0, iterations=12, rtol=0.01, bounds=(0.0, np.inf),
          name="path", quantum=2.0):
    """Tune a scalar path parameter so that the measured coverage matches ``coverage``.

    Parameters
    ----------
    build : callable
        ``build(param)`` returns the (N, 2) positions for a parameter value.
    param0 : float
        Starting value.
    coverage : float
        Requested coverage.
    shape : tuple of int
        Frame shape.
    exponent : float
        Coverage is assumed to scale roughly as ``param ** exponent``; the
        updates are multiplicative (secant-like).
    iterations : int
        Maximum number of tries.
    rtol : float
        Relative coverage error at which to stop.
    bounds : tuple of float
        The parameter is kept within ``[low, high]``: beyond them the path is
        degenerate or too large to hold in memory.
    name : str
        Path name, for the error message.
    quantum : float
        Coverage granularity of the path in pixels (e.g. the pixels of one scan
        line): misses smaller than this are not errors.

    Returns
    -------
    param : float
        The best parameter tried.
    positions : numpy.ndarray
        Its positions.

    Raises
    ------
    ValueError
        If the requested coverage cannot be reached: the best try is off by
        more than 25 % and by more than ``quantum`` pixels (e.g. a path step
        too coarse for a high coverage).
    """
    lo, hi = bounds
    param = float(np.clip(param0, lo, hi))
    best = None
    below = above = None  # parameters that gave too little / too much coverage
    for _ in range(iterations):
        pos = build(param)
        measured = _measured_coverage(pos, shape)
        # symmetric (log-ratio) error: an empty path is never the best try
        err = abs(np.log(measured / coverage)) if measured > 0 else np.inf
        if best is None or err < best[0]:
            best = (err, param, pos, measured)
        if err < rtol:
            break
        if measured == 0:
            new = param * 0.5 if exponent < 0 else param * 2
        else:
            new = param * (coverage / measured) ** (1.0 / exponent)
        if measured < coverage:
            below = param
        else:
            above = param
        if below is not None and above is not None:
            # bracketed: stay inside the bracket (bisect where the secant step leaves it)
            a, b = sorted((below, above))
            if not a < new < b:
                new = float(np.sqrt(a * b))
        new = float(np.clip(new, lo, hi))
        if new == param:  # stuck (at a bound): the request cannot be met better
            break
        param = new
    _, param, pos, measured = best
    n_pix = shape[0] * shape[1]
    if abs(measured / coverage - 1) > 0.25 and abs(measured - coverage) * n_pix > quantum:
        raise ValueError(
            f"the {name} path cannot reach coverage {coverage:.4g} on a {shape[0]}x{shape[1]} frame with these "
            f"options (closest: {measured:.4g}); choose another coverage, path or path options"
        )
    return param, pos
