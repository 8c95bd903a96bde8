"""Adaptive partial scanning: decide where the probe goes next from what has been seen (Ede 2021).

A scan starts with a static path (``initial_path``) over ``initial_fraction`` of the
dose budget, then proceeds in ``steps``: before each, a :class:`Planner` looks at the
partial scan acquired so far and returns the next ordered probe positions, which are
acquired — by a simulated microscope reading a full frame through the package's scan
simulation and :class:`~hyperspy_partialscan.NoiseModel`, or by a user's
``acquire(positions) -> intensities`` callable driving a real scan generator.

Planners:

``"uncertainty"``
    Completes the scan so far with the generator and its per-pixel uncertainty
    and chooses straight segments of ``segment_length`` pixels that maximise the
    summed sigma over pixels not yet scanned, minus a penalty on the jump from
    the probe's position (jumps longer than ``max_jump`` are excluded).
``"points"``
    For random-access scan systems: the unscanned pixels of largest sigma,
    visited in nearest-neighbour order.
``"static"``
    The baseline: the static ``initial_path`` at the full coverage, acquired in
    the same steps (identical to the static path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ._validation import check_choice, check_number
from ._version import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from hyperspy.signals import BaseSignal

    from .simulate import NoiseModel

__all__ = ["adaptive_scan", "Planner", "ADAPTIVE_PLANNERS", "UncertaintyPlanner", "PointsPlanner", "StaticPlanner"]

ADAPTIVE_PLANNERS = ("uncertainty", "points", "static")
#: directions of the uncertainty planner's candidate segments
_DIRECTIONS = np.array([(np.sin(a), np.cos(a)) for a in np.linspace(0, np.pi, 8, endpoint=False)])


class Planner(Protocol):
    """What a planner does: look at the scan so far and return the next ordered probe positions."""

    def plan(self, partial: np.ndarray, probe: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
        """Next ``n`` (or fewer) (row, column) positions, in acquisition order, for the partial scan so far.

        ``partial`` is the frame acquired so far (NaN = unscanned); ``probe`` the
        probe's current position (None before the first step).
        """


class StaticPlanner:
    """The static path at the full coverage, acquired step by step in its own order."""

    def __init__(self, positions):
        self.positions, self.next = np.asarray(positions, np.float64), 0

    def plan(self, partial, probe, n, rng):
        out = self.positions[self.next : self.next + n]
        self.next += len(out)
        return out


class _SigmaPlanner:
    """Common part of the planners driven by the completion's uncertainty."""

    def __init__(self, model=None, uncertainty_model=None, device=None):
        self.model, self.uncertainty_model, self.device = model, uncertainty_model, device
        self.history = []

    def sigma(self, partial):
        import hyperspy.api as hs

        from .completion import complete_partial_scan

        s = hs.signals.Signal2D(partial)
        _, sigma = complete_partial_scan(s, model=self.model, uncertainty=True,
                                         uncertainty_model=self.uncertainty_model, device=self.device,
                                         show_progressbar=False)
        sig = np.asarray(sigma.data, np.float64)
        sig[np.isfinite(partial)] = 0.0  # a scanned pixel gains nothing from another visit
        self.history.append(sigma.data)
        return sig


class PointsPlanner(_SigmaPlanner):
    """The ``n`` unscanned pixels of largest sigma, in nearest-neighbour order from the probe."""

    def plan(self, partial, probe, n, rng):
        sig = self.sigma(partial)
        best = np.argsort(sig, axis=None)[::-1][:n]
        pts = np.stack(np.unravel_index(best, sig.shape), 1).astype(np.float64)
        return _nearest_order(pts, probe)


class UncertaintyPlanner(_SigmaPlanner):
    """Straight segments maximising the summed sigma of unscanned pixels, minus a jump penalty."""

    def __init__(self, segment_length, max_jump=None, candidates=96, **kwargs):
        super().__init__(**kwargs)
        self.segment_length, self.max_jump, self.candidates = int(segment_length), max_jump, int(candidates)

    def plan(self, partial, probe, n, rng):
        sig = self.sigma(partial)
        out, pos = [], probe
        while sum(len(s) for s in out) < n and sig.max() > 0:
            seg = self._best_segment(sig, pos, min(self.segment_length, n - sum(len(s) for s in out)), rng)
            if seg is None:
                break
            out.append(seg)
            rows, cols = np.rint(seg).astype(int).T
            sig[rows, cols] = 0.0
            pos = seg[-1]
        return np.concatenate(out) if out else np.empty((0, 2))

    def _best_segment(self, sig, probe, length, rng):
        shape = np.array(sig.shape)
        weights = sig.ravel() ** 2
        starts = rng.choice(sig.size, size=min(self.candidates, int((weights > 0).sum())), replace=False,
                            p=weights / weights.sum())
        starts = np.stack(np.unravel_index(starts, sig.shape), 1).astype(np.float64)
        t = np.arange(length)[:, None]
        penalty = float(np.mean(sig[sig > 0])) * 0.5  # per pixel of jump: half a typical pixel's gain
        best, best_score = None, -np.inf
        for start in starts:
            jump = 0.0 if probe is None else float(np.hypot(*(start - probe)))
            if self.max_jump is not None and probe is not None and jump > self.max_jump:
                continue
            for d in _DIRECTIONS:
                seg = start + t * d
                inside = np.all((seg >= 0) & (seg <= shape - 1), axis=1)
                seg = seg[: np.argmin(inside) if not inside.all() else len(seg)]
                if len(seg) == 0:
                    continue
                rows, cols = np.rint(seg).astype(int).T
                score = sig[rows, cols].sum() - penalty * jump
                if score > best_score:
                    best, best_score = seg, score
        return best


def _nearest_order(points, start):
    """Greedy nearest-neighbour tour of ``points`` from ``start`` (or the first point)."""
    left = list(range(len(points)))
    order, here = [], points[0] if start is None else start
    while left:
        k = min(left, key=lambda i: (points[i][0] - here[0]) ** 2 + (points[i][1] - here[1]) ** 2)
        order.append(k)
        left.remove(k)
        here = points[k]
    return points[order]


def _simulated_microscope(frame, noise, rng):
    """``acquire(positions) -> intensities``: the full ``frame`` read through the scan simulation."""
    from .paths import ScanPath
    from .simulate import sample_frame

    def acquire(positions):
        path = ScanPath(np.asarray(positions, np.float64), np.ones(len(positions)), frame.shape, "adaptive")
        partial = sample_frame(frame, path, noise, rng)
        rows, cols = np.clip(np.rint(positions).astype(int), 0, np.array(frame.shape) - 1).T
        return partial[rows, cols]

    return acquire


def _path_stats(positions, threshold):
    """(path length in pixels, number of flybacks) of ordered positions."""
    if len(positions) < 2:
        return 0.0, 0
    steps = np.hypot(*np.diff(positions, axis=0).T)
    return float(steps[steps <= threshold].sum()), int((steps > threshold).sum())


def adaptive_scan(
    specimen: BaseSignal | None,
    coverage: float = 0.05,
    *,
    planner: str | Planner = "uncertainty",
    initial_path: str = "spiral",
    initial_fraction: float = 0.25,
    steps: int = 8,
    segment_length: int | None = None,
    max_jump: float | None = None,
    noise: NoiseModel | dict | None = None,
    model: str | Path | None = None,
    uncertainty_model: str | Path | None = None,
    seed: int = 0,
    acquire: Callable[[np.ndarray], np.ndarray] | None = None,
    device: str | None = None,
    shape: tuple[int, int] | None = None,
) -> BaseSignal:
    """Scan adaptively: after an initial static path, let the data decide where the probe goes next.

    Parameters
    ----------
    specimen : hyperspy.signals.Signal2D or None
        The full frame read by the simulated microscope (one frame); None with
        ``acquire`` (a real microscope), then ``shape`` gives the frame shape.
    coverage : float
        Total fraction of pixels to scan (the dose budget), in (0, 1).
    planner : {"uncertainty", "points", "static"} or Planner
        How the next positions are chosen (see the module docstring), or any
        object with the :class:`Planner` protocol.
    initial_path : str
        Static path family of the first step.
    initial_fraction : float
        Fraction of the budget spent on the initial path, in (0, 1].
    steps : int
        Adaptive steps after the initial path (the planner runs before each).
    segment_length : int, optional
        Length (pixels) of the uncertainty planner's straight segments; default
        a quarter of each step's budget, at least 8.
    max_jump : float, optional
        Longest allowed jump (pixels) between segments; jumps are counted as flybacks.
    noise : NoiseModel or dict, optional
        The simulated microscope's noise (dose, detector noise, jitter, drift).
    model, uncertainty_model : str or pathlib.Path, optional
        Generator and uncertainty models of the planner (default: shipped).
    seed : int
        Seeds the initial path, the planner's choices and the simulated noise.
    acquire : callable, optional
        ``acquire(positions) -> intensities`` for a real microscope: positions
        an (N, 2) float array in pixel units (row, column), ordered, the probe
        follows them in that order; returns (N,) intensities. Called once per
        step. If it raises (or is interrupted), the scan acquired so far is
        returned, with the step and reason recorded.
    device : str, optional
        Torch device of the planner's networks.
    shape : tuple of int, optional
        Frame shape when ``specimen`` is None.

    Returns
    -------
    PartialScan2D
        The scan (NaN = unscanned), with ``metadata.Signal.Partial_scan``
        recording the ordered positions, the step of each, the planner and its
        parameters, coverage, path length, flybacks and how the scan ended.

    Examples
    --------
    >>> import hyperspy.api as hs
    >>> import hyperspy_partialscan as hps
    >>> s = hs.signals.Signal2D(hps.specimens.nanoparticle_field((64, 64), seed=0))
    >>> p = hps.adaptive_scan(s, coverage=0.1, planner="static", steps=2, seed=0)
    >>> p.metadata.Signal.Partial_scan.planner, p.metadata.Signal.Partial_scan.stopped
    ('static', 'completed')
    """
    from .conversion import from_scan_positions
    from .paths import generate_path
    from .simulate import NoiseModel, frame_rng

    coverage = check_number("coverage", coverage, low=0, high=1, low_inclusive=False, high_inclusive=False)
    initial_fraction = check_number("initial_fraction", initial_fraction, low=0, high=1, low_inclusive=False)
    steps = check_number("steps", steps, low=0, integer=True)
    if specimen is None and acquire is None:
        raise ValueError("give a specimen (simulated microscope) or an acquire callable (real microscope)")
    if specimen is not None:
        frame = np.asarray(specimen.data, np.float64)
        if frame.ndim != 2:
            raise ValueError(f"adaptive_scan scans one frame; this specimen has shape {frame.shape} "
                             "(iterate over the frames of a stack)")
        shape = frame.shape
    elif shape is None:
        raise ValueError("shape= is needed with acquire and no specimen")
    shape = tuple(int(n) for n in shape)
    rng = frame_rng(seed, 0)
    budget = max(1, int(round(coverage * shape[0] * shape[1])))
    if acquire is None:
        acquire = _simulated_microscope(frame, NoiseModel.coerce(noise), frame_rng(seed, 0, stream=1))
    name = planner if isinstance(planner, str) else type(planner).__name__
    if isinstance(planner, str):
        check_choice("planner", planner, ADAPTIVE_PLANNERS)
        if planner == "static":
            full = generate_path(initial_path, shape, coverage, seed).positions
            planner = StaticPlanner(full)
            initial = planner.plan(None, None, max(1, int(round(initial_fraction * len(full)))), rng)
            budget = len(full)
        else:
            seg = segment_length or max(8, (budget - int(initial_fraction * budget)) // max(steps, 1) // 4)
            planner = (UncertaintyPlanner(seg, max_jump, model=model, uncertainty_model=uncertainty_model,
                                          device=device) if planner == "uncertainty"
                       else PointsPlanner(model=model, uncertainty_model=uncertainty_model, device=device))
            initial = generate_path(initial_path, shape, coverage * initial_fraction, seed).positions
    else:
        initial = generate_path(initial_path, shape, coverage * initial_fraction, seed).positions
    positions, values, step_of, stopped = [], [], [], "completed"
    per_step = (budget - len(initial)) // max(steps, 1) if steps else 0
    plan = initial
    for step in range(steps + 1):
        if step:
            partial = from_scan_positions(np.concatenate(positions), np.concatenate(values), shape).data
            want = per_step if step < steps else budget - sum(len(p) for p in positions)
            plan = planner.plan(partial, positions[-1][-1], want, rng) if want > 0 else np.empty((0, 2))
        if len(plan) == 0:
            continue
        try:
            got = np.asarray(acquire(np.asarray(plan, np.float64)), np.float64)
            if got.shape != (len(plan),):
                raise ValueError(f"acquire returned {got.shape} intensities for {len(plan)} positions")
        except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - nothing acquired is lost
            stopped = f"stopped at step {step}: {type(err).__name__}: {err}"
            break
        positions.append(np.asarray(plan, np.float64))
        values.append(got)
        step_of.append(np.full(len(plan), step))
    if not positions:
        raise RuntimeError(f"adaptive_scan acquired nothing ({stopped})")
    pos, val = np.concatenate(positions), np.concatenate(values)
    out = from_scan_positions(pos, val, shape, axes=None if specimen is None else [
        specimen.axes_manager[i].get_axis_dictionary() for i in (1, 0)])
    length, flybacks = _path_stats(pos, max(3.0, max_jump or 3.0))
    out.metadata.General.title = f"{getattr(specimen, 'metadata', None) and specimen.metadata.General.title or ''} " \
                                 f"(adaptive {name}, {100 * coverage:.3g} %)".strip()
    out.metadata.Signal.Partial_scan.add_dictionary({
        "source": "adaptive", "planner": name, "initial_path": initial_path, "initial_fraction": initial_fraction,
        "steps": steps, "segment_length": getattr(planner, "segment_length", None) or "n/a",
        "max_jump": max_jump if max_jump is not None else "none", "seed": seed,
        "noise": NoiseModel.coerce(noise).as_dict(), "coverage_requested": coverage,
        "positions_per_step": [int(len(p)) for p in positions], "step_of_position": np.concatenate(step_of),
        "path_length_px": length, "flybacks": flybacks, "stopped": stopped, "package_version": __version__,
    })
    return out
