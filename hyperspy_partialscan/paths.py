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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["ScanPath", "PATHS", "generate_path", "validate_coverage", "path_names"]


@dataclass(frozen=True)
class ScanPath:
    """Ordered probe positions of a scan.

    Attributes
    ----------
    positions : numpy.ndarray
        ``(N, 2)`` float array of (row, column) probe positions in pixel units,
        in acquisition order. Pixel ``(i, j)`` spans ``[i - 0.5, i + 0.5)``.
    dwell : numpy.ndarray
        ``(N,)`` relative dwell time at each position (mean 1).
    shape : tuple of int
        Frame shape ``(rows, columns)``.
    name : str
        Path name (a key of :data:`PATHS`).
    options : dict
        Parameters that define the path (tuned gap, spacing, ...).
    """

    positions: np.ndarray
    dwell: np.ndarray
    shape: tuple
    name: str
    options: dict = field(default_factory=dict)

    @property
    def pixel_indices(self):
        """Rasterised ``(rows, cols)`` integer indices of in-field positions."""
        return _rasterise(self.positions, self.shape)

    @property
    def mask(self):
        """Boolean ``shape`` array, True where at least one probe position falls."""
        rows, cols = self.pixel_indices
        mask = np.zeros(self.shape, dtype=bool)
        mask[rows, cols] = True
        return mask

    @property
    def coverage(self):
        """Measured fraction of sampled pixels."""
        return float(self.mask.mean())

    def window(self, top, left, shape):
        """The part of the path inside a window, in the window's coordinates.

        Parameters
        ----------
        top, left : int
            Window origin in this path's pixel coordinates.
        shape : tuple of int
            Window shape (rows, columns).
        """
        pos = self.positions - np.array([top, left], dtype=float)
        idx = np.rint(pos)
        keep = (idx[:, 0] >= 0) & (idx[:, 0] < shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < shape[1])
        return ScanPath(pos[keep], self.dwell[keep], tuple(shape), self.name, dict(self.options))

    def transposed(self):
        """The same path with rows and columns swapped (for dihedral augmentation)."""
        return ScanPath(self.positions[:, ::-1].copy(), self.dwell, self.shape[::-1], self.name, dict(self.options))


def _rasterise(positions, shape, return_inside=False):
    """Nearest-pixel indices of the in-field positions (and the in-field selector)."""
    idx = np.rint(positions).astype(np.int64)
    inside = (
        (idx[:, 0] >= 0) & (idx[:, 0] < shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < shape[1])
    )
    if return_inside:
        return idx[inside, 0], idx[inside, 1], inside
    return idx[inside, 0], idx[inside, 1]


def _measured_coverage(positions, shape):
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


def _check_positive(name, value, allow_zero=False):
    """Validate a positive (or non-negative) finite path option.

    Parameters
    ----------
    name : str
        Option name, for the message.
    value : object
        The value given.
    allow_zero : bool
        Accept zero.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``value`` is not a finite number, is negative, or is zero when
        ``allow_zero`` is False.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite {kind} number, got {value!r}")
    return v


def _check_size(name, n, shape):
    """Refuse paths with absurdly many positions (they would exhaust memory).

    Parameters
    ----------
    name : str
        Path name, for the message.
    n : float
        Number of positions the path would have.
    shape : tuple of int
        Frame shape.

    Raises
    ------
    ValueError
        If ``n`` exceeds 64 positions per pixel (plus 10 000).
    """
    limit = 64 * shape[0] * shape[1] + 10_000
    if n > limit:
        raise ValueError(
            f"the {name} path would have {n:.3g} probe positions on a {shape[0]}x{shape[1]} frame (limit "
            f"{limit}); increase its step or spacing"
        )


def _arc_resample(points, step=1.0):
    """Resample a dense polyline at (approximately) constant arc length ``step``."""
    seg = np.hypot(*np.diff(points, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(s[-1] / step), 1)
    t = np.linspace(0, s[-1], n + 1)
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


# --------------------------------------------------------------------------- paths


def _spiral_arc(theta, b):
    """Arc length of the Archimedean spiral ``r = b theta`` from 0 to ``theta``.

    Parameters
    ----------
    theta : float or numpy.ndarray
        Polar angle(s), radians.
    b : float
        Radial growth per radian.

    Returns
    -------
    float or numpy.ndarray
    """
    return 0.5 * b * (theta * np.sqrt(1 + theta * theta) + np.arcsinh(theta))


def spiral(shape, coverage, rng, *, speed="linear", step=1.0, centre_jitter=0.1, gap=None):
    """Archimedean spiral (Ede & Beanland 2020).

    The arm gap starts at ``1 / coverage`` pixels and is tuned so that the
    measured coverage matches the request. The phase is random and the centre is
    offset randomly by up to ``centre_jitter`` of the frame size. The spiral
    extends to the farthest frame corner; positions outside the field are dropped.
    Successive positions are ``step`` apart along the spiral's arc.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (rows, columns).
    coverage : float
        Requested fraction of sampled pixels.
    rng : numpy.random.Generator
        Random generator (centre offset and phase).
    speed : {"linear", "angular"}
        ``"linear"``: constant probe speed, equal dwell per position.
        ``"angular"``: constant angular velocity; the probe moves slowly near the
        centre, so dwell per position is proportional to ``1 / r``.
    step : float
        Distance between successive positions along the path, in pixels.
    centre_jitter : float
        Largest random offset of the centre, as a fraction of the frame size,
        in [0, 0.5].
    gap : float, optional
        Fix the arm gap in pixels instead of tuning it from ``coverage``.

    Returns
    -------
    ScanPath
    """
    if speed not in ("linear", "angular"):
        raise ValueError(f"spiral speed must be 'linear' or 'angular', not {speed!r}")
    step = _check_positive("spiral step", step)
    centre_jitter = _check_positive("spiral centre_jitter", centre_jitter, allow_zero=True)
    if centre_jitter > 0.5:
        raise ValueError(f"spiral centre_jitter must be in [0, 0.5], got {centre_jitter}")
    if gap is not None:
        gap = _check_positive("spiral gap", gap)
    h, w = shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2]) + rng.uniform(-1, 1, 2) * centre_jitter * np.array(
        [h, w]
    )
    phase = rng.uniform(0, 2 * np.pi)
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], dtype=float)
    r_max = np.hypot(*(corners - centre).T).max() + 1

    def build(g):
        # Archimedean spiral r = b theta (arm gap g = 2 pi b), sampled at equal
        # arc-length steps: invert the arc length s(theta) by Newton's method,
        # starting from an upper bound (s is convex in theta: monotone convergence)
        b = g / (2 * np.pi)
        theta_max = r_max / b
        n = int(_spiral_arc(theta_max, b) / step)
        _check_size("spiral", n, shape)
        s = np.arange(n + 1) * step
        theta = np.minimum(np.sqrt(2 * s / b), s / b)
        for _ in range(50):
            delta = (_spiral_arc(theta, b) - s) / (b * np.sqrt(1 + theta * theta))
            theta -= delta
            if not np.any(np.abs(delta) > 1e-9):
                break
        r = b * theta
        return np.stack([centre[0] + r * np.sin(theta + phase), centre[1] + r * np.cos(theta + phase)], axis=1)

    if gap is None:
        gap, pos = _tune(build, 1.0 / coverage, coverage, shape, exponent=-1.0, bounds=(0.5, 4 * r_max),
                         name="spiral", quantum=max(2.0, r_max))
    else:
        pos = build(gap)
    inside = _inside(pos, shape)
    pos = pos[inside]
    if speed == "angular":
        r = np.hypot(*(pos - centre).T)
        dwell = 1.0 / np.maximum(r, 1.0)
        dwell /= dwell.mean()
    else:
        dwell = np.ones(len(pos))
    return ScanPath(
        pos,
        dwell,
        tuple(shape),
        "spiral",
        {"gap": float(gap), "speed": speed, "step": step, "centre": centre.tolist(), "phase": float(phase)},
    )


def _inside(pos, shape):
    return (
        (pos[:, 0] > -0.5) & (pos[:, 0] < shape[0] - 0.5) & (pos[:, 1] > -0.5) & (pos[:, 1] < shape[1] - 0.5)
    )


def grid(shape, coverage, rng, *, spacing=None, serpentine=False):
    """Regular sub-sampled raster: every ``d``-th pixel in both directions.

    ``d = 1 / sqrt(coverage)``; a non-integer ``d`` gives a regular grid of
    sub-pixel probe positions whose rasterised spacing alternates between
    ``floor(d)`` and ``ceil(d)`` so the coverage matches the request. The grid
    origin is random within one period (within the frame if the period is
    larger than the frame, so at least one position is scanned).

    Parameters
    ----------
    shape : tuple of int
        Frame shape (rows, columns).
    coverage : float
        Requested fraction of sampled pixels.
    rng : numpy.random.Generator
        Random generator (grid origin).
    spacing : float, optional
        Grid period in pixels (overrides ``coverage``).
    serpentine : bool
        Scan alternate rows in opposite directions.

    Returns
    -------
    ScanPath
    """
    d = _check_positive("grid spacing", spacing) if spacing is not None else 1.0 / np.sqrt(coverage)
    if d < 1:
        raise ValueError(f"grid spacing must be >= 1 pixel, got {d}")
    oy, ox = _origins(rng, d, shape)
    ys = np.arange(oy, shape[0] - 0.5, d)
    xs = np.arange(ox, shape[1] - 0.5, d)
    pos = _raster(ys, xs, serpentine)
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "grid", {"spacing": float(d), "origin": [float(oy), float(ox)]})


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
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    if serpentine:
        xx[1::2] = xx[1::2, ::-1]
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def lines(shape, coverage, rng, *, spacing=None, direction="rows"):
    """Every n-th scan line, what any scan generator can do.

    ``n = 1 / coverage`` (non-integer periods alternate between neighbouring
    integers so the coverage matches); the first line is random within a period.

    At least one line is scanned, even if the period exceeds the frame.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (rows, columns).
    coverage : float
        Requested fraction of sampled pixels.
    rng : numpy.random.Generator
        Random generator (position of the first line).
    spacing : float, optional
        Line period in pixels (overrides ``coverage``).
    direction : {"rows", "columns"}
        Scan along rows (horizontal fast axis) or columns.

    Returns
    -------
    ScanPath
    """
    if direction not in ("rows", "columns"):
        raise ValueError(f"direction must be 'rows' or 'columns', not {direction!r}")
    d = _check_positive("line spacing", spacing) if spacing is not None else 1.0 / coverage
    if d < 1:
        raise ValueError(f"line spacing must be >= 1 pixel, got {d}")
    h, w = shape if direction == "rows" else shape[::-1]
    (o,) = _origins(rng, d, (h,))
    ys = np.abs(np.round(np.arange(o, h - 0.5, d)))  # abs: rint(-0.5) is -0.0
    pos = _raster(ys, np.arange(w, dtype=float), False)
    if direction == "columns":
        pos = pos[:, ::-1]
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "lines", {"spacing": float(d), "direction": direction})


def _smooth_walk(rng, n, amplitude, correlation):
    """Smooth random walk: Gaussian-filtered white noise scaled to ``amplitude`` (std)."""
    if amplitude == 0 or n == 0:
        return np.zeros(n)
    noise = ndimage.gaussian_filter1d(rng.standard_normal(n + 8 * int(correlation)), correlation, mode="wrap")
    noise = noise[: n]
    sd = noise.std()
    return noise / sd * amplitude if sd > 0 else noise


def jittered_grid(shape, coverage, rng, *, directions="both", jitter=None, correlation=20.0, spacing=None):
    """Grid-like path of scan lines with smooth random-walk jitter (Ede 2020).

    Scan lines cross the frame along rows (and, with ``directions="both"``, along
    columns, forming a grid). Each line's perpendicular position follows a smooth
    random walk, as a real scan coil's line jitter does.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (rows, columns).
    coverage : float
        Requested fraction of sampled pixels.
    rng : numpy.random.Generator
        Random generator (line positions and jitter).
    directions : {"both", "rows", "columns"}
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
    """
    if directions not in ("both", "rows", "columns"):
        raise ValueError(f"directions must be 'both', 'rows' or 'columns', not {directions!r}")
    if jitter is not None:
        jitter = _check_positive("jittered_grid jitter", jitter, allow_zero=True)
    correlation = _check_positive("jittered_grid correlation", correlation)
    if spacing is not None:
        spacing = _check_positive("jittered_grid spacing", spacing)
    seed = int(rng.integers(2**63))
    h, w = shape

    def build(d):
        r = np.random.default_rng(seed)
        amp = d / 8 if jitter is None else float(jitter)
        out = []
        dirs = ["rows", "columns"] if directions == "both" else [directions]
        n_lines = sum(((w, h) if di == "rows" else (h, w))[1] / d + 1 for di in dirs)
        _check_size("jittered_grid", n_lines * max(h, w), shape)
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


def random(shape, coverage, rng, *, order="raster"):
    """Uniformly random pixels (without repetition).

    At least one pixel is scanned.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (rows, columns).
    coverage : float
        Requested fraction of sampled pixels.
    rng : numpy.random.Generator
        Random generator (pixel choice).
    order : {"raster", "random"}
        Acquisition order: raster order (minimal probe travel) or random.

    Returns
    -------
    ScanPath
    """
    if order not in ("raster", "random"):
        raise ValueError(f"order must be 'raster' or 'random', not {order!r}")
    n_pix = shape[0] * shape[1]
    n = max(int(round(coverage * n_pix)), 1)
    flat = rng.choice(n_pix, size=n, replace=False)
    if order == "raster":
        flat = np.sort(flat)
    pos = np.stack(np.unravel_index(flat, shape), axis=1).astype(float)
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "random", {"order": order})


def lissajous(shape, coverage, rng, *, ratio=None, step=1.0):
    """Lissajous curve ``(y, x) = (A sin(a t + phi), B sin(t))`` filling the frame.

    The frequency ratio ``a`` is irrational by default (golden ratio, randomly
    perturbed) so the curve never closes; its duration is tuned to the coverage.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (rows, columns).
    coverage : float
        Requested fraction of sampled pixels.
    rng : numpy.random.Generator
        Random generator (ratio perturbation and phase).
    ratio : float, optional
        Frequency ratio of the slow (row) to the fast (column) axis.
    step : float
        Distance between successive positions along the path, in pixels.

    Returns
    -------
    ScanPath
    """
    h, w = shape
    if ratio is not None:
        ratio = _check_positive("lissajous ratio", ratio)
    step = _check_positive("lissajous step", step)
    a = ratio if ratio is not None else (1 + np.sqrt(5)) / 2 * rng.uniform(0.95, 1.05)
    phi = rng.uniform(0, 2 * np.pi)
    ay, ax = (h - 1) / 2, (w - 1) / 2
    # upper bound of |d pos / dt| (kept finite for single-pixel frames)
    speed = max(np.hypot(ay * a, ax), 0.5)

    def build(length):
        dt = 0.5 * step / speed
        t_max = length / (speed * 2 / np.pi)
        _check_size("lissajous", t_max / dt / 4, shape)
        t = np.arange(0, t_max + dt, dt)
        pts = np.stack([ay + ay * np.sin(a * t + phi), ax + ax * np.sin(t)], axis=1)
        return _arc_resample(pts, step)

    length0 = coverage * h * w
    length, pos = _tune(build, length0, coverage, shape, exponent=1.0, bounds=(step, 20.0 * h * w),
                        name="lissajous")
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "lissajous", {"ratio": a, "phase": float(phi),
                                                                       "length": float(length), "step": step})


def line_hop(shape, coverage, rng, *, segment_length=16.0, band=None):
    """Line-hop sampling (Kovarik et al. 2016): short raster segments at random lines.

    The frame is divided into bands of ``band`` rows (default ``1 / coverage``).
    The probe sweeps each band once along the fast axis, hopping at random to a
    new row of the band after each segment (lengths exponential with mean
    ``segment_length`` pixels). At least one segment is scanned.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (rows, columns).
    coverage : float
        Requested fraction of sampled pixels.
    rng : numpy.random.Generator
        Random generator (band origin, segment lengths and rows).
    segment_length : float
        Mean segment length in pixels.
    band : float, optional
        Band height in pixels (overrides ``coverage``).

    Returns
    -------
    ScanPath
    """
    h, w = shape
    segment_length = _check_positive("line_hop segment_length", segment_length)
    d = _check_positive("line_hop band", band) if band is not None else 1.0 / coverage
    if d < 1:
        raise ValueError(f"band height must be >= 1 pixel, got {d}")
    out = []
    skipped = None
    o = rng.uniform(0, d)
    starts = np.concatenate([[0.0], np.arange(o, h, d)]) if o > 0.5 else np.arange(o, h, d)
    edges = np.append(starts, h)
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows = np.arange(int(np.ceil(lo - 0.5)), int(np.ceil(hi - 0.5)))
        rows = rows[(rows >= 0) & (rows < h)]
        if rows.size == 0:
            continue
        # only a (hi - lo)/d fraction of a full band: fewer pixels in partial edge bands
        x = 0
        frac = (hi - lo) / d
        while x < w:
            n = max(int(round(rng.exponential(segment_length))), 1)
            xs = np.arange(x, min(x + n, w), dtype=float)
            if rng.uniform() < frac:
                out.append(np.stack([np.full(xs.size, float(rng.choice(rows))), xs], axis=1))
            else:
                skipped = (xs, rows)
            x += n
    if not out and skipped is not None:  # very low coverage on a small frame: scan at least one segment
        xs, rows = skipped
        out.append(np.stack([np.full(xs.size, float(rng.choice(rows))), xs], axis=1))
    pos = np.concatenate(out) if out else np.zeros((0, 2))
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "line_hop", {"band": d, "segment_length": segment_length})


PATHS = {
    "spiral": spiral,
    "grid": grid,
    "jittered_grid": jittered_grid,
    "random": random,
    "lissajous": lissajous,
    "line_hop": line_hop,
    "lines": lines,
}


def path_names():
    """Names of the available scan paths."""
    return tuple(PATHS)


def validate_coverage(coverage):
    """Return ``coverage`` as float or raise ValueError if it is not in (0, 1]."""
    try:
        c = float(coverage)
    except (TypeError, ValueError):
        raise ValueError(f"coverage must be a number in (0, 1], not {coverage!r}") from None
    if not np.isfinite(c) or c <= 0 or c > 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
    return c


def generate_path(name, shape, coverage, rng=None, **options):
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
    """
    if name not in PATHS:
        raise ValueError(f"unknown scan path {name!r}; choose one of {', '.join(PATHS)}")
    coverage = validate_coverage(coverage)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be two positive integers, got {shape}")
    rng = np.random.default_rng(rng)
    try:
        return PATHS[name](shape, coverage, rng, **options)
    except TypeError as err:
        raise TypeError(f"invalid option for scan path {name!r}: {err}") from None
