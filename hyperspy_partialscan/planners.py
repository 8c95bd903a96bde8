"""Planners of adaptive scans: look at the partial scan so far, return the next ordered probe positions.

A planner is any object with the :class:`Planner` protocol. The shipped ones:

:class:`UncertaintyPlanner`
    Completes the scan so far with the generator and its per-pixel uncertainty
    and chooses straight segments that maximise the summed sigma over pixels not
    yet scanned, minus a penalty on the jump from the probe's position
    (:func:`choose_segments`).
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

__all__ = ["Planner", "StaticPlanner", "UncertaintyPlanner", "PointsPlanner", "choose_segments", "nearest_order",
           "default_segment_length", "default_footprint"]

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
    """Segment length (pixels) of the uncertainty planner: about 1.5 line spacings at this coverage, at least 8.

    A scan of coverage ``c`` made of lines has them about ``1 / c`` pixels apart;
    segments of a few spacings fill the gaps where sigma is high without
    running across the regions that need no more dose.

    Examples
    --------
    >>> from hyperspy_partialscan.planners import default_segment_length
    >>> default_segment_length(1 / 20), default_segment_length(1 / 40)
    (30, 60)
    """
    return max(8, int(round(1.5 / coverage)))


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


def binned_partial(partial, factor):
    """Mean of the sampled pixels in ``factor`` x ``factor`` blocks (NaN where a block holds none).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.planners import binned_partial
    >>> binned_partial(np.array([[1.0, np.nan], [3.0, np.nan]]), 2)
    array([[2.]])
    """
    h, w = (np.asarray(partial.shape) // factor) * factor
    blocks = np.asarray(partial, np.float64)[:h, :w].reshape(h // factor, factor, w // factor, factor)
    ok = np.isfinite(blocks)
    count = ok.sum(axis=(1, 3))
    total = np.where(ok, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


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

    def sigma(self, partial):
        import hyperspy.api as hs

        from .completion import complete_partial_scan

        factor = self.plan_bin if min(partial.shape) // max(self.plan_bin, 1) >= 128 else 1
        view = binned_partial(partial, factor) if factor > 1 else partial
        _, sigma = complete_partial_scan(hs.signals.Signal2D(view), model=self.model, uncertainty=True,
                                         uncertainty_model=self.uncertainty_model, device=self.device,
                                         show_progressbar=False)
        sig = np.asarray(sigma.data, np.float64)
        if factor > 1:
            sig = np.pad(np.kron(sig, np.ones((factor, factor))),
                         [(0, n - m * factor) for n, m in zip(partial.shape, sig.shape)], mode="edge")
        self.history.append(sig.astype(np.float32))
        sig = sig.copy()
        sig[np.isfinite(partial)] = 0.0  # a scanned pixel gains nothing from another visit
        return sig


class PointsPlanner(_SigmaPlanner):
    """The ``n`` unscanned pixels of largest sigma, in nearest-neighbour order from the probe."""

    def plan(self, partial, probe, n, rng):
        sig = self.sigma(partial)
        best = np.argsort(sig, axis=None)[::-1][:n]
        best = best[sig.ravel()[best] > 0]
        pts = np.stack(np.unravel_index(best, sig.shape), 1).astype(np.float64)
        return nearest_order(pts, probe) if len(pts) else pts


class UncertaintyPlanner(_SigmaPlanner):
    """Straight segments maximising the summed sigma of unscanned pixels, minus a jump penalty."""

    def __init__(self, segment_length, max_jump=None, candidates=96, footprint=0.0, **kwargs):
        super().__init__(**kwargs)
        self.segment_length, self.max_jump, self.candidates = int(segment_length), max_jump, int(candidates)
        self.footprint = float(footprint)

    def plan(self, partial, probe, n, rng):
        return choose_segments(self.sigma(partial), probe, n, self.segment_length, rng, max_jump=self.max_jump,
                               candidates=self.candidates, footprint=self.footprint)


def choose_segments(gain, probe, n, segment_length, rng, *, max_jump=None, candidates=96, jump_cost=0.5,
                    footprint=0.0):
    """Ordered positions of straight segments that collect the most ``gain``, ``n`` positions at most.

    Segment by segment: ``candidates`` start pixels are drawn with probability
    proportional to ``gain**2``; from each, segments of ``segment_length``
    pixels (unit steps, 16 directions, cut at the frame's edge) are scored by
    the gain they collect minus ``jump_cost`` times a typical pixel's gain per
    pixel of jump from the probe (starts beyond ``max_jump`` are excluded);
    the best is taken, the gain near it lowered (by ``1 - exp(-d² / 2 footprint²)``
    at distance ``d``; zero on it), and the probe moves to its end.

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
    gain = np.array(gain, np.float64)
    out, pos, total = [], None if probe is None else np.asarray(probe, np.float64), 0
    while total < n and gain.max() > 0:
        seg = _best_segment(gain, pos, min(int(segment_length), n - total), rng, max_jump, candidates, jump_cost)
        if seg is None:
            break
        out.append(seg)
        total += len(seg)
        _lower_gain(gain, seg, footprint)
        pos = seg[-1]
    return np.concatenate(out) if out else np.empty((0, 2))


def _lower_gain(gain, seg, footprint):
    """Zero the gain on ``seg``'s pixels and lower it within ``footprint`` pixels of them (in place)."""
    from scipy.ndimage import distance_transform_edt

    rows, cols = np.rint(seg).astype(int).T
    if footprint <= 0:
        gain[rows, cols] = 0.0
        return
    reach = int(np.ceil(3 * footprint))
    r0, c0 = max(rows.min() - reach, 0), max(cols.min() - reach, 0)
    r1, c1 = min(rows.max() + reach + 1, gain.shape[0]), min(cols.max() + reach + 1, gain.shape[1])
    window = np.ones((r1 - r0, c1 - c0), bool)
    window[rows - r0, cols - c0] = False
    d = distance_transform_edt(window)
    gain[r0:r1, c0:c1] *= 1.0 - np.exp(-(d**2) / (2.0 * footprint**2))


def _best_segment(gain, probe, length, rng, max_jump, candidates, jump_cost):
    """The best straight segment of at most ``length`` pixels (vectorised over starts and directions)."""
    shape = np.array(gain.shape)
    weights = gain.ravel() ** 2
    k = min(candidates, int((weights > 0).sum()))
    starts = rng.choice(gain.size, size=k, replace=False, p=weights / weights.sum())
    starts = np.stack(np.unravel_index(starts, gain.shape), 1).astype(np.float64)
    jump = np.zeros(k) if probe is None else np.hypot(*(starts - probe).T)
    if max_jump is not None and probe is not None:
        keep = jump <= max_jump
        if not keep.any():
            return None
        starts, jump = starts[keep], jump[keep]
    t = np.arange(length, dtype=np.float64)
    seg = starts[:, None, None, :] + t[None, None, :, None] * DIRECTIONS[None, :, None, :]  # (S, D, L, 2)
    valid = np.cumprod(np.all((seg >= 0) & (seg <= shape - 1), axis=-1), axis=-1).astype(bool)
    idx = np.clip(np.rint(seg).astype(int), 0, shape - 1)
    collected = np.where(valid, gain[idx[..., 0], idx[..., 1]], 0.0).sum(-1)
    penalty = jump_cost * float(np.mean(gain[gain > 0]))
    score = collected - penalty * jump[:, None]
    s, d = np.unravel_index(np.argmax(score), score.shape)
    return seg[s, d][valid[s, d]]


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
