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
from typing import TYPE_CHECKING

import numpy as np

from ._validation import check_choice, check_number
from ._version import __version__
from .planners import (
    Planner,
    PointsPlanner,
    StaticPlanner,
    UncertaintyPlanner,
    default_footprint,
    default_segment_length,
)

if TYPE_CHECKING:
    from pathlib import Path

    from hyperspy.signals import BaseSignal

    from .simulate import NoiseModel

__all__ = ["adaptive_scan", "Planner", "ADAPTIVE_PLANNERS", "UncertaintyPlanner", "PointsPlanner", "StaticPlanner"]

ADAPTIVE_PLANNERS = ("uncertainty", "points", "static")


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
    plan_bin: int = 2,
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
        about 1.5 line spacings at this coverage (``1.5 / coverage``, at least 8).
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
    plan_bin : int
        The planner completes the scan so far binned by this factor (frames of
        at least 256 pixels a side for 2): sigma's pattern, at a quarter of the
        cost. 1 plans at full resolution.

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
    plan_bin = check_number("plan_bin", plan_bin, low=1, integer=True)
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
            seg = segment_length or default_segment_length(coverage)
            kw = {"model": model, "uncertainty_model": uncertainty_model, "device": device, "plan_bin": plan_bin}
            planner = (UncertaintyPlanner(seg, max_jump, footprint=default_footprint(coverage), **kw)
                       if planner == "uncertainty" else PointsPlanner(**kw))
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
        "max_jump": max_jump if max_jump is not None else "none", "seed": seed, "plan_bin": plan_bin,
        "noise": NoiseModel.coerce(noise).as_dict(), "coverage_requested": coverage,
        "positions_per_step": [int(len(p)) for p in positions], "step_of_position": np.concatenate(step_of),
        "path_length_px": length, "flybacks": flybacks, "stopped": stopped, "package_version": __version__,
    })
    return out
