"""Adaptive partial scanning: decide where the probe goes next from what has been seen (Ede 2021).

A scan starts with a static path (``initial_path``) over ``initial_fraction`` of the
dose budget, then proceeds in ``steps``: before each, a :class:`Planner` looks at the
partial scan acquired so far and returns the next ordered probe positions, which are
acquired — by a simulated microscope reading a full frame through the package's scan
simulation and :class:`~hyperspy_partialscan.NoiseModel`, or by a user's
``acquire(positions) -> intensities`` callable driving a real scan generator.

Planners (:mod:`~hyperspy_partialscan.planners`):

``"curvature"`` (default)
    Completes the scan so far with the generator (at half resolution) and
    predicts the error of interpolating it from the samples: the completion's
    curvature (Laplacian of Gaussian) times the squared distance to the nearest
    sample (:func:`~hyperspy_partialscan.planners.interpolation_error`). It
    chooses straight segments of ``segment_length`` pixels that collect the
    most predicted error, minus a penalty on the jump from the probe's position
    (jumps longer than ``max_jump`` are excluded). The prediction falls where
    samples are added, so re-planning after each step spreads the dose over
    every region with structure.
``"uncertainty"``
    The same segment rule with the generator's per-pixel uncertainty:
    completes the scan so far with its sigma, predicts sigma again with the
    sampling density doubled by hypothetical samples, and collects the
    predicted reduction of the error variance (where sigma is high *and* more
    samples would lower it).
``"points"``
    For random-access scan systems: the unscanned pixels of largest sigma,
    visited in nearest-neighbour order.
``"static"``
    The baseline: the static ``initial_path`` at the full coverage, acquired in
    the same steps (identical to the static path).

Stacks: every frame of a specimen stack gets its own adaptive scan, through the
frame engine (:func:`~hyperspy_partialscan.engine.map_frames`; lazily for lazy
input). Frame *i* draws its random numbers by the static paths' rule
(:func:`~hyperspy_partialscan.simulate.frame_rng`): ``frame_rng(seed, i)`` for the
planner, ``frame_rng(seed, i, stream=1)`` for the simulated noise, and the initial
path is the one all frames share, as in :func:`to_partial_scan` without
``vary_per_frame``. A single frame is frame 0, so frame 0 of a stack is the scan of
that frame on its own, and the ``"static"`` planner on a stack gives exactly
:func:`to_partial_scan`'s result. The ordered positions are recorded for single
frames only; a stack records the parameters and per-frame summaries.

There is no signal method: the specimen is a full frame (a plain ``Signal2D``,
whose methods an extension cannot extend), and a ``PartialScan2D`` cannot be
scanned again (its unscanned pixels hold no value for the simulated microscope).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._docstrings import fill_doc
from ._validation import check_choice, check_number, seed_or_fresh
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

__all__ = ["adaptive_scan", "Planner", "ADAPTIVE_PLANNERS", "UncertaintyPlanner", "PointsPlanner", "StaticPlanner",
           "STACK_SUMMARIES"]

ADAPTIVE_PLANNERS = ("curvature", "uncertainty", "points", "static")
#: the segment planners among them, and the gain of :class:`UncertaintyPlanner` each is
_SEGMENT_GAINS = {"curvature": "curvature", "uncertainty": "reduction"}

#: per-frame summaries of a stack's scans, recorded as arrays of the navigation shape
STACK_SUMMARIES = ("positions_total", "path_length_px", "flybacks", "stopped_at_step")


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


@dataclass(frozen=True)
class _Settings:
    """Everything that decides a frame's scan besides the frame and its index (picklable, for the engine)."""

    coverage: float
    planner: str | Planner
    initial_path: str
    initial_fraction: float
    steps: int
    segment_length: int | None
    max_jump: float | None
    noise: NoiseModel
    model: object
    uncertainty_model: object
    device: str | None
    plan_bin: int
    seed: int

    @property
    def name(self):
        return self.planner if isinstance(self.planner, str) else type(self.planner).__name__

    def start(self, shape, index, fresh):
        """(planner, initial positions, budget) of frame ``index``; ``fresh``: a copy of a user's planner."""
        from .paths import generate_path
        from .simulate import path_rng

        seed = path_rng(self.seed, index, False)  # the initial path: one for all frames, as a scan generator's
        if self.planner == "static":
            full = generate_path(self.initial_path, shape, self.coverage, seed).positions
            planner = StaticPlanner(full)
            return planner, planner.plan(None, None, max(1, int(round(self.initial_fraction * len(full)))), None), \
                len(full)
        initial = generate_path(self.initial_path, shape, self.coverage * self.initial_fraction, seed).positions
        budget = max(1, int(round(self.coverage * shape[0] * shape[1])))
        if not isinstance(self.planner, str):
            return (copy.deepcopy(self.planner) if fresh else self.planner), initial, budget
        kw = {"model": self.model, "uncertainty_model": self.uncertainty_model, "device": self.device,
              "plan_bin": self.plan_bin}
        if self.planner == "points":
            return PointsPlanner(**kw), initial, budget
        planner = UncertaintyPlanner(self.segment_length or default_segment_length(self.coverage), self.max_jump,
                                     footprint=default_footprint(self.coverage),
                                     gain=_SEGMENT_GAINS[self.planner], **kw)
        return planner, initial, budget

    def record(self):
        """The parameters of the scan, for ``metadata.Signal.Partial_scan``."""
        return {"source": "adaptive", "planner": self.name, "initial_path": self.initial_path,
                "initial_fraction": self.initial_fraction, "steps": self.steps,
                "segment_length": self.segment_length or (default_segment_length(self.coverage)
                                                          if self.name in _SEGMENT_GAINS else "n/a"),
                "max_jump": self.max_jump if self.max_jump is not None else "none", "seed": self.seed,
                "plan_bin": self.plan_bin, "noise": self.noise.as_dict(), "coverage_requested": self.coverage,
                "package_version": __version__}


@dataclass
class _Scan:
    """What one frame's scan acquired: positions and values in order, the step of each, how it ended."""

    positions: np.ndarray
    values: np.ndarray
    step_of: np.ndarray
    per_step: list
    stopped: str
    stopped_at: int

    def image(self, shape):
        """The partial scan (float32, NaN = unscanned; repeated hits averaged)."""
        from .conversion import from_scan_positions

        return from_scan_positions(self.positions, self.values, shape).data

    def summary(self, max_jump):
        """The :data:`STACK_SUMMARIES` of this scan."""
        return (len(self.positions),) + _path_stats(self.positions, max(3.0, max_jump or 3.0)) + (self.stopped_at,)


def _scan(settings, shape, index, acquire=None, frame=None, *, fresh=False, progress=None):
    """Frame ``index``'s scan: the initial path, then ``steps`` planned steps, each acquired when planned.

    ``acquire`` drives a real microscope; without it a simulated one reads
    ``frame``. Whatever ``acquire`` raises ends the scan with what was acquired.
    """
    from .conversion import from_scan_positions
    from .simulate import frame_rng

    rng = frame_rng(settings.seed, index)
    if acquire is None:
        acquire = _simulated_microscope(frame, settings.noise, frame_rng(settings.seed, index, stream=1))
    planner, plan, budget = settings.start(shape, index, fresh)
    steps = settings.steps
    positions, values, step_of, stopped, stopped_at = [], [], [], "completed", -1
    per_step = (budget - len(plan)) // max(steps, 1) if steps else 0
    for step in range(steps + 1):
        if step:
            partial = from_scan_positions(np.concatenate(positions), np.concatenate(values), shape).data
            want = per_step if step < steps else budget - sum(len(p) for p in positions)
            plan = planner.plan(partial, positions[-1][-1], want, rng) if want > 0 else np.empty((0, 2))
        if len(plan):
            try:
                got = np.asarray(acquire(np.asarray(plan, np.float64)), np.float64)
                if got.shape != (len(plan),):
                    raise ValueError(f"acquire returned {got.shape} intensities for {len(plan)} positions")
            except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - nothing acquired is lost
                stopped, stopped_at = f"stopped at step {step}: {type(err).__name__}: {err}", step
                break
            positions.append(np.asarray(plan, np.float64))
            values.append(got)
            step_of.append(np.full(len(plan), step))
        if progress is not None:
            progress.update(1)
    if not positions:
        raise RuntimeError(f"adaptive_scan acquired nothing ({stopped})")
    return _Scan(np.concatenate(positions), np.concatenate(values), np.concatenate(step_of),
                 [int(len(p)) for p in positions], stopped, stopped_at)


class _FrameScans:
    """Block function of a stack (picklable): each frame's scan, and its summaries in a second channel."""

    def __init__(self, settings):
        self.settings = settings

    def __call__(self, frames, indices):
        out = np.full((len(frames), 2) + frames.shape[1:], np.nan, np.float32)
        for k, (frame, index) in enumerate(zip(frames, indices, strict=True)):
            frame = np.asarray(frame, np.float64)
            scan = _scan(self.settings, frame.shape, int(index), frame=frame, fresh=True)
            out[k, 0] = scan.image(frame.shape)
            out[k, 1].flat[: len(STACK_SUMMARIES)] = scan.summary(self.settings.max_jump)
        return out


@fill_doc
def adaptive_scan(
    specimen: BaseSignal | None,
    coverage: float = 0.05,
    *,
    planner: str | Planner = "curvature",
    initial_path: str = "spiral",
    initial_fraction: float = 0.25,
    steps: int = 8,
    segment_length: int | None = None,
    max_jump: float | None = None,
    noise: NoiseModel | dict | None = None,
    model: str | Path | None = None,
    uncertainty_model: str | Path | None = None,
    seed: int | None = 0,
    acquire: Callable[[np.ndarray], np.ndarray] | None = None,
    device: str | None = None,
    shape: tuple[int, int] | None = None,
    plan_bin: int = 2,
    navigation_chunks: int = 1,
    lazy_output: bool | None = None,
    show_progressbar: bool | None = None,
) -> BaseSignal:
    """Scan adaptively: after an initial static path, let the data decide where the probe goes next.

    Parameters
    ----------
    specimen : hyperspy.signals.Signal2D or None
        The full frame(s) read by the simulated microscope, lazy or not, any
        navigation shape (each frame gets its own scan); never modified. None
        with ``acquire`` (a real microscope), then ``shape`` gives the frame
        shape.
    coverage : float
        Total fraction of pixels to scan (the dose budget), in (0, 1).
    planner : {{"curvature", "uncertainty", "points", "static"}} or Planner
        How the next positions are chosen (see the module docstring; default
        ``"curvature"``, the better of the two segment planners on the
        benchmark, ``docs/benchmarks.md``), or any
        object with the :class:`Planner` protocol (copied for each frame of a
        stack; used as given for one frame).
    initial_path : str
        Static path family of the first step.
    initial_fraction : float
        Fraction of the budget spent on the initial path, in (0, 1].
    steps : int
        Adaptive steps after the initial path (the planner runs before each).
    segment_length : int, optional
        Length (pixels) of the segment planners' straight segments; default
        0.3 line spacings at this coverage (``0.3 / coverage``, at least 4;
        :func:`~hyperspy_partialscan.planners.default_segment_length`). Longer
        segments mean fewer jumps (flybacks) and a less targeted dose.
    max_jump : float, optional
        Longest allowed jump (pixels) between segments; jumps are counted as flybacks.
    noise : NoiseModel or dict, optional
        The simulated microscope's noise (dose, detector noise, jitter, drift).
    model, uncertainty_model : str or pathlib.Path, optional
        Generator and uncertainty models of the planner (default: shipped).
    seed : int, optional
        Seeds the initial path, the planner's choices and the simulated noise
        (frame *i* of a stack: the streams ``frame_rng(seed, i)``, see the
        module docstring); None draws one, recorded in the metadata.
    acquire : callable, optional
        ``acquire(positions) -> intensities`` for a real microscope: positions
        an (N, 2) float array in pixel units (row, column), ordered, the probe
        follows them in that order; returns (N,) intensities. Called once per
        step. If it raises (or is interrupted), the scan acquired so far is
        returned, with the step and reason recorded. One frame only.
    device : str, optional
        Torch device of the planner's networks.
    shape : tuple of int, optional
        Frame shape when ``specimen`` is None.
    plan_bin : int
        The planner completes the scan so far binned by this factor (frames of
        at least 256 pixels a side for 2): sigma's pattern, at a quarter of the
        cost. 1 plans at full resolution.
    navigation_chunks : int
        Frames of a stack per dask block (default 1: a frame's scan is the
        unit of work of a worker and of the progress bar).
    {lazy_output} A single frame is scanned at once (its record, the
        ordered positions, is part of the result); a stack is scanned when
        the lazy result is computed.
    show_progressbar : bool, optional
        Progress bar over the steps (one frame) or the frames (a stack);
        default: HyperSpy's preference.

    Returns
    -------
    PartialScan2D or LazyPartialScan2D
        The scan (float32, NaN = unscanned) with the specimen's axes, metadata
        and original_metadata, titled ``"<title> (adaptive <planner>, <coverage> %)"``.
        ``metadata.Signal.Partial_scan`` records the planner and its
        parameters, ``frame_shape`` and, for one frame, the ordered
        ``positions``, ``step_of_position``, ``positions_per_step``,
        ``coverage_measured``, ``path_length_px``, ``flybacks`` and ``stopped``
        (``"completed"`` or where and why the scan stopped). For a stack, the
        positions differ per frame and are not kept: ``coverage_measured`` and
        the :data:`STACK_SUMMARIES` (``positions_total``, ``path_length_px``,
        ``flybacks``, ``stopped_at_step``, -1 when completed) are arrays of the
        navigation shape (array order), and ``stopped`` says whether every
        frame completed; for lazy output they are ``"not computed (lazy
        output)"`` (``lazy_output=False`` records them and still reads a lazy
        input block by block).

    Raises
    ------
    ValueError
        An invalid number, planner, seed or ``acquire``; neither ``specimen``
        nor ``acquire``; ``acquire`` with a stack; a specimen that is not an
        image stack, has no frames, or (in memory) holds non-finite pixels,
        e.g. a partial scan.
    RuntimeError
        Nothing was acquired (``acquire`` failed at once).

    Examples
    --------
    >>> import numpy as np, hyperspy.api as hs
    >>> import hyperspy_partialscan as hps
    >>> s = hs.signals.Signal2D(hps.specimens.nanoparticle_field((64, 64), seed=0))
    >>> p = hps.adaptive_scan(s, coverage=0.1, planner="static", steps=2, seed=0, show_progressbar=False)
    >>> p.metadata.Signal.Partial_scan.planner, p.metadata.Signal.Partial_scan.stopped
    ('static', 'completed')

    A stack, lazily: every frame gets its own scan when computed.

    >>> stack = hs.signals.Signal2D(np.stack([s.data, s.data.T])).as_lazy()
    >>> lazy = hps.adaptive_scan(stack, coverage=0.1, planner="static", steps=2, seed=0)
    >>> type(lazy).__name__, lazy.metadata.Signal.Partial_scan.flybacks
    ('LazyPartialScan2D', 'not computed (lazy output)')
    >>> eager = hps.adaptive_scan(stack, coverage=0.1, planner="static", steps=2, seed=0, lazy_output=False,
    ...                           show_progressbar=False)
    >>> eager.metadata.Signal.Partial_scan.coverage_measured.round(2)
    array([0.1, 0.1])
    """
    from .simulate import NoiseModel

    settings = _settings(coverage, planner, initial_path, initial_fraction, steps, segment_length, max_jump,
                         NoiseModel.coerce(noise), model, uncertainty_model, device, plan_bin, seed)
    check_number("navigation_chunks", navigation_chunks, low=1, integer=True)
    if acquire is not None and not callable(acquire):
        raise ValueError(f"acquire must be a callable acquire(positions) -> intensities, not {acquire!r}")
    if specimen is None:
        if acquire is None:
            raise ValueError("give a specimen (simulated microscope) or an acquire callable (real microscope)")
        if shape is None:
            raise ValueError("shape= is needed with acquire and no specimen")
        return _scan_one(None, settings, tuple(int(n) for n in shape), acquire, lazy_output, show_progressbar)
    _check_specimen(specimen)
    if specimen.axes_manager.navigation_dimension == 0:
        return _scan_one(specimen, settings, specimen.data.shape, acquire, lazy_output, show_progressbar)
    if acquire is not None:
        raise ValueError(f"acquire drives one frame (a real microscope scans one field at a time); this specimen is "
                         f"a stack of shape {specimen.data.shape}")
    return _scan_stack(specimen, settings, navigation_chunks, lazy_output, show_progressbar)


def _settings(coverage, planner, initial_path, initial_fraction, steps, segment_length, max_jump, noise, model,
              uncertainty_model, device, plan_bin, seed):
    """The checked :class:`_Settings` (one-line errors naming the parameter)."""
    from .paths import PATHS

    coverage = check_number("coverage", coverage, low=0, high=1, low_inclusive=False, high_inclusive=False)
    initial_fraction = check_number("initial_fraction", initial_fraction, low=0, high=1, low_inclusive=False)
    steps = check_number("steps", steps, low=0, integer=True)
    plan_bin = check_number("plan_bin", plan_bin, low=1, integer=True)
    check_choice("initial_path", initial_path, PATHS)
    if segment_length is not None:
        segment_length = check_number("segment_length", segment_length, low=1, integer=True)
    if max_jump is not None:
        max_jump = check_number("max_jump", max_jump, low=0, low_inclusive=False)
    if isinstance(planner, str):
        check_choice("planner", planner, ADAPTIVE_PLANNERS)
    elif not callable(getattr(planner, "plan", None)):
        raise ValueError(f"planner must be one of {', '.join(ADAPTIVE_PLANNERS)} or an object with a "
                         f"plan(partial, probe, n, rng) method, not {planner!r}")
    seed = seed_or_fresh(seed)
    return _Settings(coverage, planner, initial_path, initial_fraction, steps, segment_length, max_jump, noise, model,
                     uncertainty_model, device, plan_bin, seed)


def _check_specimen(specimen):
    """A specimen is full frames: an image stack with frames, finite (checked for in-memory data)."""
    from ._signal_tools import validate_signal2d

    validate_signal2d(specimen, "adaptive_scan")
    if not specimen._lazy and specimen.data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(specimen.data)))
        if bad:
            raise ValueError(f"specimen: {bad} non-finite pixel(s) (NaN or inf); adaptive_scan reads full frames, "
                             "not partial scans")


def _title(specimen, settings):
    title = specimen.metadata.General.title if specimen is not None else ""
    return f"{title} (adaptive {settings.name}, {100 * settings.coverage:.3g} %)".strip()


def _scan_one(specimen, settings, shape, acquire, lazy_output, show_progressbar):
    """One frame, scanned now (with ``acquire`` or the simulated microscope), progress over the steps."""
    import dask.array as da

    from ._signal_tools import signal_like
    from .conversion import from_scan_positions
    from .engine import progressbar_wanted

    frame = None
    if acquire is None:
        data = specimen.data
        frame = np.asarray(data.compute() if specimen._lazy else data, np.float64)
    bar = None
    if progressbar_wanted(show_progressbar):  # (tqdm.auto is imported only then: it warns in bare notebooks)
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps + 1, desc="adaptive scan", unit="step")
    try:
        scan = _scan(settings, shape, 0, acquire, frame, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    lazy = (specimen is not None and specimen._lazy) if lazy_output is None else bool(lazy_output)
    if specimen is None:
        out = from_scan_positions(scan.positions, scan.values, shape, title=_title(None, settings))
        image = out.data
        if lazy:
            out = out.as_lazy()
    else:
        image = scan.image(shape)
        out = signal_like(specimen, da.from_array(image) if lazy else image, signal_type="partial_scan",
                          title=_title(specimen, settings), keep_noise_model=settings.noise.is_clean)
    _, length, flybacks, _ = scan.summary(settings.max_jump)
    record = settings.record()
    record.update({"frame_shape": [int(n) for n in shape], "positions": scan.positions,
                   "positions_per_step": scan.per_step, "step_of_position": scan.step_of,
                   "coverage_measured": float(np.isfinite(image).mean()), "path_length_px": length,
                   "flybacks": flybacks, "stopped": scan.stopped})
    out.metadata.set_item("Signal.Partial_scan", record)
    return out


def _scan_stack(specimen, settings, navigation_chunks, lazy_output, show_progressbar):
    """Every frame of a stack through the frame engine; summaries computed with the data unless lazy."""
    import dask.array as da

    from ._signal_tools import LAZY_NOTE, check_laziness, signal_like
    from .engine import compute, map_frames

    data = specimen.data
    nav, (h, w) = data.shape[:-2], data.shape[-2:]
    if h * w < len(STACK_SUMMARIES):
        raise ValueError(f"specimen: frames of {h}x{w} pixels are too small to scan")
    lazy_output = check_laziness(specimen, False, lazy_output)
    both = map_frames(data, _FrameScans(settings), batch_size=navigation_chunks, name="adaptive-scan",
                      token=settings, with_indices=True, channels=2)
    image = both[..., 0, :, :]
    summaries = both[..., 1, :, :].reshape(nav + (h * w,))[..., : len(STACK_SUMMARIES)]
    coverage = da.isfinite(image).mean(axis=(-2, -1))
    record = settings.record()
    record["frame_shape"] = [int(h), int(w)]
    if lazy_output:
        record.update({k: LAZY_NOTE for k in ("coverage_measured", "stopped") + STACK_SUMMARIES})
    else:
        image, summaries, coverage = compute(image, summaries, coverage, show_progressbar=show_progressbar)
        record["coverage_measured"] = np.asarray(coverage, np.float64)
        for k, name in enumerate(STACK_SUMMARIES):
            record[name] = summaries[..., k].astype(np.float64 if name == "path_length_px" else np.int64)
        early = int((record["stopped_at_step"] >= 0).sum())
        record["stopped"] = "completed" if not early else f"{early} frame(s) stopped early (see stopped_at_step)"
    out = signal_like(specimen, image, signal_type="partial_scan", title=_title(specimen, settings),
                      keep_noise_model=settings.noise.is_clean)
    out.metadata.set_item("Signal.Partial_scan", record)
    return out
