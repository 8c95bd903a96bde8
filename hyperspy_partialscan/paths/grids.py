"""Line-based scan paths: a sub-sampled raster grid, every n-th scan line and a jittered grid of lines."""

from __future__ import annotations

import numpy as np

from .._docstrings import fill_doc
from .._validation import check_choice, check_number, check_path_size
from ._base import ScanPath, _smooth_walk
from ._tune import _tune


@fill_doc
def grid(
    shape: tuple[int, int], coverage: float, rng: np.random.Generator, *, spacing: float | None = None,
    serpentine: bool = False,
) -> ScanPath:
    """Regular sub-sampled raster: every ``d``-th pixel in both directions.

    ``d = 1 / sqrt(coverage)``; a non-integer ``d`` gives a regular grid of
    sub-pixel probe positions whose rasterised spacing alternates between
    ``floor(d)`` and ``ceil(d)`` so the coverage matches the request. The grid
    origin is random within one period (within the frame if the period is
    larger than the frame, so at least one position is scanned).

    Parameters
    ----------
    {path_shape_coverage}
    rng : numpy.random.Generator
        Random generator (grid origin).
    spacing : float, optional
        Grid period in pixels, at least 1 (overrides ``coverage``).
    serpentine : bool
        Scan alternate rows in opposite directions.

    Returns
    -------
    ScanPath
        Options: the period ``spacing`` and the grid ``origin`` (row, column).

    Examples
    --------
    >>> p = grid((64, 64), 0.25, np.random.default_rng(0))
    >>> p.options["spacing"], p.coverage
    (2.0, 0.25)
    >>> grid((8, 8), 0.5, np.random.default_rng(0), spacing=4).positions.shape
    (4, 2)
    """
    d = check_number("grid spacing", 1.0 / np.sqrt(coverage) if spacing is None else spacing, low=1)
    oy, ox = _origins(rng, d, shape)
    ys = np.arange(oy, shape[0] - 0.5, d)
    xs = np.arange(ox, shape[1] - 0.5, d)
    pos = _raster(ys, xs, serpentine)
    options = {"spacing": float(d), "origin": [float(oy), float(ox)]}
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "grid", options)


def _origins(rng, d, sizes):
    """Random origins of periodic lines/points along axes of ``sizes`` pixels.

    Position ``o + k d`` falls in pixel ``rint(o + k d)``; pixel ``i`` spans
    ``[i - 0.5, i + 0.5)``, so the origin is uniform in ``[-0.5, d - 0.5)``,
    which gives every pixel the same chance of being scanned (a period of 1
    scans every pixel). Where the period exceeds the axis the origin stays
    within the axis, so at least one line is scanned.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (one draw per axis).
    d : float
        Period in pixels.
    sizes : sequence of int
        Axis lengths in pixels.

    Returns
    -------
    list of float
        One origin per axis.
    """
    return [float(rng.uniform(-0.5, min(d, n) - 0.5)) for n in sizes]


def _raster(ys, xs, serpentine):
    """Raster-ordered ``(N, 2)`` positions of the grid ``ys x xs`` (alternate rows reversed if serpentine)."""
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    if serpentine:
        xx[1::2] = xx[1::2, ::-1]
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


@fill_doc
def lines(
    shape: tuple[int, int], coverage: float, rng: np.random.Generator, *, spacing: float | None = None,
    direction: str = "rows",
) -> ScanPath:
    """Every n-th scan line, what any scan generator can do.

    ``n = 1 / coverage`` (non-integer periods alternate between neighbouring
    integers so the coverage matches); the first line is random within a period.

    At least one line is scanned, even if the period exceeds the frame.

    Parameters
    ----------
    {path_shape_coverage}
    rng : numpy.random.Generator
        Random generator (position of the first line).
    spacing : float, optional
        Line period in pixels, at least 1 (overrides ``coverage``).
    direction : {{"rows", "columns"}}
        Scan along rows (horizontal fast axis) or columns.

    Returns
    -------
    ScanPath
        Options: the line period ``spacing`` and the ``direction``.

    Examples
    --------
    >>> p = lines((40, 30), 0.1, np.random.default_rng(0), direction="columns")
    >>> p.coverage, p.options["spacing"]
    (0.1, 10.0)
    """
    check_choice("direction", direction, ("rows", "columns"))
    d = check_number("line spacing", 1.0 / coverage if spacing is None else spacing, low=1)
    h, w = shape if direction == "rows" else shape[::-1]
    (o,) = _origins(rng, d, (h,))
    ys = np.abs(np.round(np.arange(o, h - 0.5, d)))  # abs: rint(-0.5) is -0.0
    pos = _raster(ys, np.arange(w, dtype=float), False)
    if direction == "columns":
        pos = pos[:, ::-1]
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "lines", {"spacing": float(d), "direction": direction})


@fill_doc
def jittered_grid(
    shape: tuple[int, int],
    coverage: float,
    rng: np.random.Generator,
    *,
    directions: str = "both",
    jitter: float | None = None,
    correlation: float = 20.0,
    spacing: float | None = None,
) -> ScanPath:
    """Grid-like path of scan lines with smooth random-walk jitter (Ede 2020).

    Scan lines cross the frame along rows (and, with ``directions="both"``, along
    columns, forming a grid). Each line's perpendicular position follows a smooth
    random walk, as a real scan coil's line jitter does.

    Parameters
    ----------
    {path_shape_coverage}
    rng : numpy.random.Generator
        Random generator (line positions and jitter).
    directions : {{"both", "rows", "columns"}}
        Which lines to scan.
    jitter : float, optional
        Standard deviation of the perpendicular offset in pixels; default
        ``spacing / 8``.
    correlation : float
        Correlation length of the jitter along the line, in pixels.
    spacing : float, optional
        Fix the line period in pixels instead of tuning it from ``coverage``.

    Returns
    -------
    ScanPath
        Options: the line period ``spacing`` (tuned or given), ``directions``,
        ``jitter`` and ``correlation``.

    Examples
    --------
    >>> p = jittered_grid((128, 128), 0.1, np.random.default_rng(0))
    >>> p.name, abs(p.coverage / 0.1 - 1) < 0.05
    ('jittered_grid', True)
    >>> jittered_grid((64, 64), 0.1, np.random.default_rng(0), spacing=16.0, jitter=0).options["jitter"]
    0.0
    """
    check_choice("directions", directions, ("both", "rows", "columns"))
    jitter = check_number("jittered_grid jitter", jitter, low=0, allow_none=True)
    correlation = check_number("jittered_grid correlation", correlation, low=0, low_inclusive=False)
    spacing = check_number("jittered_grid spacing", spacing, low=0, low_inclusive=False, allow_none=True)
    seed = int(rng.integers(2**63))
    h, w = shape
    dirs = ["rows", "columns"] if directions == "both" else [directions]

    def build(d):
        r = np.random.default_rng(seed)
        amp = d / 8 if jitter is None else float(jitter)
        n_lines = sum(((w, h) if di == "rows" else (h, w))[1] / d + 1 for di in dirs)
        check_path_size("jittered_grid", n_lines * max(h, w), shape)
        out = []
        for direction in dirs:
            n_fast, n_slow = (w, h) if direction == "rows" else (h, w)
            o = r.uniform(-0.5, d - 0.5)
            for y in np.arange(o, n_slow - 0.5, d):
                x = np.arange(n_fast, dtype=float)
                yj = np.clip(y + _smooth_walk(r, n_fast, amp, correlation), 0, n_slow - 1)
                seg = np.stack([yj, x], axis=1)
                out.append(seg if direction == "rows" else seg[:, ::-1])
        return np.concatenate(out) if out else np.zeros((0, 2))

    d0 = (2.0 if directions == "both" else 1.0) / coverage
    if spacing is None:
        d, pos = _tune(build, d0, coverage, shape, exponent=-1.0, bounds=(0.5, 2.0 * max(h, w)),
                       name="jittered_grid", quantum=max(h, w))
    else:
        d, pos = spacing, build(spacing)
    return ScanPath(
        pos,
        np.ones(len(pos)),
        tuple(shape),
        "jittered_grid",
        {"spacing": float(d), "directions": directions, "jitter": d / 8 if jitter is None else jitter,
         "correlation": correlation},
    )
