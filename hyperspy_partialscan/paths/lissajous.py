"""Lissajous-curve scan path."""

from __future__ import annotations

import numpy as np

from .._docstrings import fill_doc
from .._validation import check_number, check_path_size
from ._base import ScanPath, _arc_resample
from ._tune import _tune


@fill_doc
def lissajous(
    shape: tuple[int, int], coverage: float, rng: np.random.Generator, *, ratio: float | None = None,
    step: float = 1.0,
) -> ScanPath:
    """Lissajous curve ``(y, x) = (A sin(a t + phi), B sin(t))`` filling the frame.

    The frequency ratio ``a`` is irrational by default (golden ratio, randomly
    perturbed) so the curve never closes; its duration is tuned to the coverage.

    Parameters
    ----------
    {path_shape_coverage}
    rng : numpy.random.Generator
        Random generator (ratio perturbation and phase).
    ratio : float, optional
        Frequency ratio of the slow (row) to the fast (column) axis.
    step : float
        Distance between successive positions along the path, in pixels.

    Returns
    -------
    ScanPath
        Options: the frequency ``ratio``, the ``phase`` (radians), the tuned
        curve ``length`` and the ``step``, in pixels.

    Examples
    --------
    >>> p = lissajous((128, 128), 0.1, np.random.default_rng(0))
    >>> p.name, abs(p.coverage / 0.1 - 1) < 0.05
    ('lissajous', True)
    >>> steps = np.hypot(*np.diff(p.positions, axis=0).T)
    >>> bool(0.5 < steps.min() and steps.max() < 1.01)
    True
    """
    h, w = shape
    ratio = check_number("lissajous ratio", ratio, low=0, low_inclusive=False, allow_none=True)
    step = check_number("lissajous step", step, low=0, low_inclusive=False)
    a = ratio if ratio is not None else (1 + np.sqrt(5)) / 2 * rng.uniform(0.95, 1.05)
    phi = rng.uniform(0, 2 * np.pi)
    ay, ax = (h - 1) / 2, (w - 1) / 2
    # upper bound of |d pos / dt| (kept finite for single-pixel frames)
    speed = max(np.hypot(ay * a, ax), 0.5)

    def build(length):
        dt = 0.5 * step / speed
        t_max = length / (speed * 2 / np.pi)
        check_path_size("lissajous", t_max / dt / 4, shape)
        t = np.arange(0, t_max + dt, dt)
        pts = np.stack([ay + ay * np.sin(a * t + phi), ax + ax * np.sin(t)], axis=1)
        return _arc_resample(pts, step)

    length0 = coverage * h * w
    length, pos = _tune(build, length0, coverage, shape, exponent=1.0, bounds=(step, 20.0 * h * w),
                        name="lissajous")
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "lissajous", {"ratio": a, "phase": float(phi),
                                                                       "length": float(length), "step": step})
