"""Planners of adaptive scans: look at the partial scan so far, return the next ordered probe positions.

A planner is any object with the :class:`Planner` protocol. The shipped ones:

:class:`UncertaintyPlanner`
    Completes the scan so far with the generator and its per-pixel uncertainty
    and chooses straight segments that collect the most predicted reduction of
    the error variance (or sigma) over pixels not yet scanned, minus a penalty
    on the jump from the probe's position (:func:`choose_segments`).
:class:`PointsPlanner`
    For random-access scan systems: the unscanned pixels of largest sigma,
    visited in nearest-neighbour order.
:class:`StaticPlanner`
    The baseline: a static path acquired step by step in its own order.

The segment choice is a pure array function (:func:`choose_segments`), so the
training of the generator on adaptive-style masks uses the same rule with a
proxy for sigma.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .blocks import block_mean, block_spread

__all__ = ["Planner", "StaticPlanner", "UncertaintyPlanner", "PointsPlanner", "choose_segments", "nearest_order",
           "interpolation_error", "default_segment_length", "default_footprint"]

#: directions of the candidate segments (16 over a full turn: a segment is walked from its start)
DIRECTIONS = np.array([(np.sin(a), np.cos(a)) for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)])


class Planner(Protocol):
    """What a planner does: look at the scan so far and return the next ordered probe positions."""

    def plan(self, partial: np.ndarray, probe: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
        """Next ``n`` (or fewer) (row, column) positions, in acquisition order, for the partial scan so far.

        ``partial`` is the frame acquired so far (NaN = unscanned); ``probe`` the
        probe's current position (None before the first step).
        """


def default_segment_length(coverage):
    """Segment length (pixels) of the segment planners: 0.3 line spacings at this coverage, at least 4.

    A scan of coverage ``c`` made of lines has them about ``1 / c`` pixels
    apart. Short segments (dashes) put the dose where the predicted error is,
    at the price of a jump (a flyback) per segment: on 512² crops of the
    sample data's `train` split at 1/20 (8 steps, curvature gain), segments of
    0.3 / 0.5 / 0.75 / 1.5 spacings took the completion's mean RMSE to 0.85 /
    0.89 / 0.92 / 0.97 times the static spiral's; 0.3 spacings cost about 1,700
    flybacks on a 512² frame at 1/20 (``docs/benchmarks.md``). Pass
    ``segment_length`` to trade quality for fewer jumps.

    Examples
    --------
    >>> from hyperspy_partialscan.planners import default_segment_length
    >>> default_segment_length(1 / 20), default_segment_length(1 / 40)
    (6, 12)
    """
    return max(4, int(round(0.3 / coverage)))


def default_footprint(coverage):
    """Radius (pixels) over which a planned segment lowers the gain around it: half a line spacing, ``0.5 / c``.

    Examples
    --------
    >>> from hyperspy_partialscan.planners import default_footprint
    >>> default_footprint(1 / 20)
    10.0
    """
    return 0.5 / coverage


class StaticPlanner:
    """The static path at the full coverage, acquired step by step in its own order."""

    def __init__(self, positions):
        self.positions, self.next = np.asarray(positions, np.float64), 0

    def plan(self, partial, probe, n, rng):
        out = self.positions[self.next : self.next + n]
        self.next += len(out)
        return out


class _SigmaPlanner:
    """Common part of the planners driven by the completion's uncertainty.

    ``plan_bin`` > 1 completes the scan so far binned by that factor (when the
    binned frame is at least 128 pixels a side) and spreads sigma back over the
    blocks: the choice needs sigma's pattern, not its pixel detail, and the
    completion costs ``plan_bin**2`` times less.
    """

    def __init__(self, model=None, uncertainty_model=None, device=None, plan_bin=1):
        self.model, self.uncertainty_model, self.device = model, uncertainty_model, device
        self.plan_bin = int(plan_bin)
        self.history = []
        self._plans_cache = None

    def _factor(self, partial):
        return self.plan_bin if min(partial.shape) // max(self.plan_bin, 1) >= 128 else 1

    def _view(self, partial):
        """(the scan so far as the planner completes it, binned by ``factor``; ``factor``)."""
        factor = self._factor(partial)
        return (block_mean(partial, factor) if factor > 1 else np.asarray(partial, np.float64)), factor

    def _complete(self, view, uncertainty=True):
        """(completion, sigma) of a partial scan, float64.

        Without ``uncertainty``: (the generator's estimate everywhere, the
        noisy samples not put back, None).
        """
        import hyperspy.api as hs

        from .completion import complete_partial_scan

        out = complete_partial_scan(hs.signals.Signal2D(view), model=self.model, uncertainty=uncertainty,
                                    uncertainty_model=self.uncertainty_model if uncertainty else None,
                                    device=self.device, keep_measured=uncertainty, show_progressbar=False)
        comp, sigma = out if uncertainty else (out, None)
        return np.asarray(comp.data, np.float64), None if sigma is None else np.asarray(sigma.data, np.float64)

    def _gain_map(self, partial, small, factor=1):
        """``small`` (computed on the binned frame) spread back over ``partial``'s pixels; zero where scanned."""
        small = block_spread(small, partial.shape, factor)
        self.history.append(small.astype(np.float32))
        gain = small.copy()
        gain[np.isfinite(partial)] = 0.0  # a scanned pixel gains nothing from another visit
        return gain

    def sigma(self, partial):
        """The completion's sigma at every unscanned pixel (zero where scanned)."""
        view, factor = self._view(partial)
        _, sig = self._complete(view)
        return self._gain_map(partial, sig, factor)

    def curvature(self, partial, footprint):
        """:func:`interpolation_error` of the completion of the scan so far (zero where scanned)."""
        view, factor = self._view(partial)
        comp, _ = self._complete(view, uncertainty=False)
        return self._gain_map(partial, interpolation_error(comp, np.isfinite(partial), footprint, factor=factor))

    def _plans(self):
        """(generator plan, uncertainty spec), resolved once per planner; the engine caches the networks."""
        if self._plans_cache is None:
            from .engine import plan_network
            from .uncertainty import plan_uncertainty

            gen_plan = plan_network(self.model, "completion", self.device)
            self._plans_cache = (gen_plan, plan_uncertainty(gen_plan, self.uncertainty_model))
        return self._plans_cache

    def reduction(self, partial, footprint, rng):
        """Predicted reduction of the completion's error variance near each unscanned pixel from more samples.

        The scan so far is completed with its sigma; then sigma is predicted
        again with the sampling density doubled by hypothetical samples at
        random unscanned pixels, their values taken from the completion (which
        therefore stays as it is: the generator runs once). The drop of sigma²
        between the two, averaged over the unscanned pixels within
        ``footprint`` (Gaussian weights), is where more dose pays: high where
        sigma is high *and* samples inform their neighbours (edges, particles,
        smooth gradients), low in vacuum and in texture finer than the samples'
        spacing, where sigma stays high whatever the density.
        """
        from scipy.ndimage import gaussian_filter

        from .engine import worker_network
        from .models.features import completion_inputs
        from .models.inference import run_network
        from .uncertainty import frame_variance_model

        gen_plan, spec = self._plans()
        view, factor = self._view(partial)
        variance_model = frame_variance_model(view, "estimated", {})
        inputs, ((lo, s),) = completion_inputs(view[None])
        raw = run_network(worker_network(gen_plan, "completion"), inputs, gen_plan.device, gen_plan.precision)
        completion = raw * s + lo  # data units
        free = np.flatnonzero(~np.isfinite(view))
        pick = rng.choice(free, size=min(free.size, max(1, view.size - free.size)), replace=False)
        what_if = view.copy()
        what_if.flat[pick] = completion[0].flat[pick]
        inputs2, ((lo2, s2),) = completion_inputs(what_if[None])
        # uncalibrated sigma in data units (calibration factor 1: the drop compares two predictions), before
        # and after in one batch
        before, after = spec.sigma(np.concatenate([inputs, inputs2]), np.concatenate([raw, (completion - lo2) / s2]),
                                   [(lo, s, variance_model, 1.0), (lo2, s2, variance_model, 1.0)], gen_plan.device)
        drop = np.clip(before.astype(np.float64) ** 2 - after.astype(np.float64) ** 2, 0.0, None)
        counted = ~np.isfinite(what_if)
        width = max(footprint / factor, 1.0)
        num = gaussian_filter(np.where(counted, drop, 0.0), width)
        den = gaussian_filter(counted.astype(np.float64), width)
        return self._gain_map(partial, num / np.maximum(den, 1e-12), factor)


class PointsPlanner(_SigmaPlanner):
    """The ``n`` unscanned pixels of largest sigma, in nearest-neighbour order from the probe."""

    def plan(self, partial, probe, n, rng):
        sig = self.sigma(partial)
        best = np.argsort(sig, axis=None)[::-1][:n]
        best = best[sig.ravel()[best] > 0]
        pts = np.stack(np.unravel_index(best, sig.shape), 1).astype(np.float64)
        return nearest_order(pts, probe) if len(pts) else pts


class UncertaintyPlanner(_SigmaPlanner):
    """Straight segments maximising the predicted error reduction (or sigma) along them, minus a jump penalty.

    ``gain="reduction"`` (default) sums :meth:`reduction` along each
    candidate segment; ``gain="sigma"`` sums the completion's sigma;
    ``gain="curvature"`` sums :meth:`curvature`, the interpolation error
    predicted from the completion's curvature and the distance to the nearest
    sample (the generator only, no uncertainty network).
    """

    GAINS = ("reduction", "sigma", "curvature")

    def __init__(self, segment_length, max_jump=None, candidates=96, footprint=0.0, gain="reduction", **kwargs):
        super().__init__(**kwargs)
        self.segment_length, self.max_jump, self.candidates = int(segment_length), max_jump, int(candidates)
        self.footprint = float(footprint)
        if gain not in self.GAINS:
            raise ValueError(f"gain must be one of {self.GAINS}, not {gain!r}")
        self.gain = gain

    def plan(self, partial, probe, n, rng):
        if self.gain == "reduction":
            gain = self.reduction(partial, max(self.footprint, 1.0), rng)
        elif self.gain == "curvature":
            gain = self.curvature(partial, max(self.footprint, 1.0))
        else:
            gain = self.sigma(partial)
        return choose_segments(gain, probe, n, self.segment_length, rng, max_jump=self.max_jump,
                               candidates=self.candidates, footprint=self.footprint)


#: scale (pixels) of the Laplacian of Gaussian of :func:`interpolation_error`
CURVATURE_SCALE = 2.0
#: share of the mean squared curvature added everywhere (flat and noisy areas still gain from samples)
CURVATURE_FLOOR = 0.2


def interpolation_error(completion, sampled, footprint, scale=CURVATURE_SCALE, floor=CURVATURE_FLOOR, factor=1):
    """Predicted squared error of interpolating ``completion`` from the ``sampled`` pixels alone.

    The error of interpolating a smooth image between samples a distance
    ``d`` away grows as half its second derivative times ``d**2``. The
    curvature is the completion's Laplacian of Gaussian at ``scale`` pixels,
    squared and averaged over ``footprint / 2`` pixels (Gaussian), plus
    ``floor`` times its mean (flat, noisy areas still gain from samples);
    ``d`` is the distance to the nearest sampled pixel. Unlike the curvature
    alone, the prediction falls where samples are added, so a planner driven
    by it spreads its segments instead of returning to the same structure.

    Parameters
    ----------
    completion : numpy.ndarray
        2-D completion of the scan so far, at full resolution or binned by
        ``factor`` (the curvature is computed there, then spread back over
        the blocks; edge blocks repeated).
    sampled : numpy.ndarray of bool
        Sampled pixels, full resolution (the prediction is zero there).
    footprint : float
        Radius (pixels) over which a sample informs its neighbours.
    scale, floor : float
    factor : int
        Binning of ``completion`` relative to ``sampled``.

    Returns
    -------
    numpy.ndarray
        float64 map, ``(curvature / 2 * d**2) ** 2``.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.planners import interpolation_error
    >>> y, x = np.mgrid[:64, :64]
    >>> image = np.exp(-((x - 16.0) ** 2 + (y - 32.0) ** 2) / 50)  # one blob, left half
    >>> sampled = np.zeros((64, 64), bool); sampled[::8, ::8] = True
    >>> err = interpolation_error(image, sampled, footprint=4)
    >>> bool(err[:, :32].sum() > 3 * err[:, 32:].sum()), float(err[sampled].max())
    (True, 0.0)

    Denser samples over the blob lower its predicted error:

    >>> denser = sampled.copy(); denser[::2, :32] = True
    >>> bool(interpolation_error(image, denser, 4)[:, :32].sum() < 0.1 * err[:, :32].sum())
    True
    """
    from scipy.ndimage import distance_transform_edt, gaussian_filter, gaussian_laplace

    sampled = np.asarray(sampled, bool)
    curvature = gaussian_filter(gaussian_laplace(np.asarray(completion, np.float64), scale / factor) ** 2,
                                max(footprint / 2 / factor, 0.5)) / factor**4  # per full-resolution pixel²
    curvature = block_spread(curvature + floor * curvature.mean(), sampled.shape, factor)
    d = distance_transform_edt(~sampled)
    return curvature * (d**2 / 2) ** 2


def choose_segments(gain, probe, n, segment_length, rng, *, max_jump=None, candidates=96, jump_cost=0.5,
                    footprint=0.0):
    """Ordered positions of straight segments that collect the most ``gain``, ``n`` positions at most.

    Segment by segment: ``candidates`` start pixels are drawn (cells of 8 x 8
    pixels with probability proportional to their largest ``gain**2``, each
    cell's best pixel); from each, segments of ``segment_length``
    pixels (unit steps, 16 directions, cut at the frame's edge) are scored by
    the gain they collect minus ``jump_cost`` times a typical pixel's gain per
    pixel of jump from the probe (starts beyond ``max_jump`` are excluded);
    the best is taken (its positions on pixels already scanned, gain 0, or
    repeated are dropped: the probe crosses them without dwelling), the gain
    near it lowered (by ``1 - exp(-d² / 2 footprint²)`` at distance ``d``;
    zero on it), and the probe moves to its end.

    Parameters
    ----------
    gain : numpy.ndarray
        2-D map of what visiting each pixel is worth (zero: nothing; e.g.
        sigma at unscanned pixels). Not modified.
    probe : numpy.ndarray or None
        The probe's (row, column) position, or None (no jump cost).
    n : int
        Positions wanted.
    segment_length : int
        Pixels per segment.
    rng : numpy.random.Generator
    max_jump : float, optional
        Longest jump (pixels) from the probe to a segment's start.
    candidates : int
        Start pixels drawn per segment.
    jump_cost : float
        Cost of a pixel of jump, in units of the mean positive gain.
    footprint : float
        Radius (pixels) over which a segment's samples inform their
        neighbours (0: only its own pixels lose their gain).

    Returns
    -------
    numpy.ndarray
        (m, 2) positions, m <= n, in acquisition order (fewer when no gain is left).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.planners import choose_segments
    >>> gain = np.zeros((32, 32)); gain[10, 4:28] = 1.0
    >>> pos = choose_segments(gain, None, 24, 24, np.random.default_rng(0))
    >>> sorted(set(pos[:, 0].round().astype(int).tolist()))
    [10]
    """
    field = _GainField(gain)
    out, pos, total = [], None if probe is None else np.asarray(probe, np.float64), 0
    positive = field.gain[field.gain > 0]
    penalty = jump_cost * float(positive.mean()) if positive.size else 0.0
    while total < n and field.any():
        seg = _best_segment(field, pos, min(int(segment_length), n - total), rng, max_jump, candidates, penalty)
        if seg is None:
            break
        seg = _new_pixels_only(seg, field.gain)
        out.append(seg)
        total += len(seg)
        field.lower(seg, footprint)
        pos = seg[-1]
    return np.concatenate(out) if out else np.empty((0, 2))


def _new_pixels_only(seg, gain):
    """The positions of ``seg`` on pixels not scanned yet (gain > 0), each pixel once: the probe crosses
    scanned pixels without dwelling, so they cost no dose."""
    rows, cols = np.rint(seg).astype(int).T
    key = rows * gain.shape[1] + cols
    first = np.zeros(len(seg), bool)
    first[np.unique(key, return_index=True)[1]] = True
    return seg[first & (gain[rows, cols] > 0)]


#: side (pixels) of the cells from which the segment rule draws its candidate starts
CELL = 8


class _GainField:
    """A copy of the gain map with the best pixel of every ``CELL`` x ``CELL`` cell, kept up to date locally."""

    def __init__(self, gain):
        gain = np.asarray(gain, np.float64)
        self.shape = gain.shape
        h, w = -(-np.asarray(gain.shape) // CELL) * CELL
        self.flat = np.zeros(h * w + 1)  # one zero past the end: where out-of-frame steps of a segment look
        self.padded = self.flat[:-1].reshape(h, w)
        self.padded[: gain.shape[0], : gain.shape[1]] = gain
        self.gain = self.padded[: gain.shape[0], : gain.shape[1]]  # a view: lowering it updates the cells' source
        self.best = np.zeros((h // CELL, w // CELL), int)
        self.peak = np.zeros((h // CELL, w // CELL))
        self._update(0, 0, h, w)

    def _update(self, r0, c0, r1, c1):
        """Recompute the cells overlapping rows r0:r1 and columns c0:c1."""
        a, b = r0 // CELL, c0 // CELL
        e, f = -(-r1 // CELL), -(-c1 // CELL)
        block = self.padded[a * CELL : e * CELL, b * CELL : f * CELL]
        cells = block.reshape(e - a, CELL, f - b, CELL).transpose(0, 2, 1, 3).reshape(e - a, f - b, CELL * CELL)
        self.best[a:e, b:f] = cells.argmax(-1)
        self.peak[a:e, b:f] = np.take_along_axis(cells, self.best[a:e, b:f, None], -1)[..., 0]

    def any(self):
        return bool(self.peak.max() > 0)

    def starts(self, k, rng):
        """Up to ``k`` cells drawn with probability proportional to their peak gain squared (without
        replacement), each cell's best pixel."""
        weight = self.peak.ravel() ** 2
        k = min(k, int(np.count_nonzero(weight)))
        if k == 0:
            return np.empty((0, 2))
        pick = rng.choice(weight.size, size=k, replace=False, p=weight / weight.sum())
        row, col = np.divmod(pick, self.peak.shape[1])
        best = self.best.ravel()[pick]
        return np.stack([row * CELL + best // CELL, col * CELL + best % CELL], 1).astype(np.float64)

    def lower(self, seg, footprint):
        """Zero the gain on ``seg``'s pixels and lower it within ``footprint`` pixels of them."""
        from scipy.ndimage import distance_transform_edt

        rows, cols = np.rint(seg).astype(int).T
        reach = int(np.ceil(3 * footprint)) if footprint > 0 else 0
        r0, c0 = max(rows.min() - reach, 0), max(cols.min() - reach, 0)
        r1, c1 = min(rows.max() + reach + 1, self.shape[0]), min(cols.max() + reach + 1, self.shape[1])
        if footprint <= 0:
            self.gain[rows, cols] = 0.0
        else:
            window = np.ones((r1 - r0, c1 - c0), bool)
            window[rows - r0, cols - c0] = False
            d = distance_transform_edt(window)
            self.gain[r0:r1, c0:c1] *= 1.0 - np.exp(-(d**2) / (2.0 * footprint**2))
        self._update(r0, c0, r1, c1)


def _best_segment(field, probe, length, rng, max_jump, candidates, penalty):
    """The best straight segment of at most ``length`` pixels (vectorised over starts and directions)."""
    starts = field.starts(candidates, rng)
    jump = np.zeros(len(starts)) if probe is None else np.hypot(*(starts - probe).T)
    if max_jump is not None and probe is not None:
        keep = jump <= max_jump
        starts, jump = starts[keep], jump[keep]
    if len(starts) == 0:
        return None
    steps = _steps(length)
    start = starts.astype(np.int64)  # starts are whole pixels
    rows = start[:, 0, None, None] + steps[None, ..., 0]  # (S, D, L)
    cols = start[:, 1, None, None] + steps[None, ..., 1]
    # a straight line that leaves the (convex) frame never re-enters it: ``inside`` is a prefix of each segment
    inside = (rows >= 0) & (rows < field.shape[0]) & (cols >= 0) & (cols < field.shape[1])
    flat = np.where(inside, rows * field.padded.shape[1] + cols, field.flat.size - 1)
    collected = field.flat[flat].sum(-1)
    score = collected - penalty * jump[:, None]
    s, d = np.unravel_index(np.argmax(score), score.shape)
    t = np.arange(int(inside[s, d].sum()), dtype=np.float64)
    return starts[s] + t[:, None] * DIRECTIONS[d]


_STEPS = {}


def _steps(length):
    """Whole-pixel offsets (D, L, 2) of unit steps along every direction (cached per length)."""
    if length not in _STEPS:
        _STEPS[length] = np.rint(np.arange(length)[None, :, None] * DIRECTIONS[:, None, :]).astype(np.int64)
    return _STEPS[length]


def nearest_order(points, start):
    """Greedy nearest-neighbour tour of ``points`` from ``start`` (or the first point).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.planners import nearest_order
    >>> nearest_order(np.array([[0.0, 5.0], [0.0, 1.0], [0.0, 3.0]]), np.array([0.0, 0.0]))[:, 1]
    array([1., 3., 5.])
    """
    points = np.asarray(points, np.float64)
    left = np.ones(len(points), bool)
    order, here = [], points[0] if start is None else np.asarray(start, np.float64)
    for _ in range(len(points)):
        d = np.where(left, ((points - here) ** 2).sum(1), np.inf)
        k = int(np.argmin(d))
        order.append(k)
        left[k] = False
        here = points[k]
    return points[order]
