"""Signal-level creation of partial scans: simulated, from dense acquisitions, from position lists."""

from __future__ import annotations

import numpy as np

from ._signal_tools import signal_like, validate_signal2d
from ._validation import check_seed
from ._version import __version__
from .engine import compute, map_frames
from .paths import PATHS, generate_path, validate_coverage
from .simulate import NoiseModel, frame_rng, path_rng, sample_frame

__all__ = ["to_partial_scan", "as_partial_scan", "from_scan_positions"]


def _random_seed():
    """A fresh random seed.

    Returns
    -------
    int
        In [0, 2**63), so it fits the int64 of saved metadata.
    """
    return int(np.random.SeedSequence().entropy % (2**63))


class _Simulator:
    """Picklable per-batch simulator (for dask workers)."""

    def __init__(self, path, name, coverage, options, noise, seed, vary):
        self.path, self.name, self.coverage = path, name, coverage
        self.options, self.noise, self.seed, self.vary = options, noise, seed, vary

    def __call__(self, frames, indices):
        out = np.empty(frames.shape, np.float32)
        for k, (f, i) in enumerate(zip(frames, indices)):
            path = (
                generate_path(self.name, f.shape, self.coverage, path_rng(self.seed, i, True), **self.options)
                if self.vary
                else self.path
            )
            out[k] = sample_frame(f, path, self.noise, frame_rng(self.seed, i, stream=1))
        return out


def to_partial_scan(
    signal,
    path="spiral",
    coverage=0.05,
    *,
    seed=None,
    noise=None,
    vary_per_frame=False,
    navigation_chunks=16,
    lazy_output=None,
    show_progressbar=None,
    **path_options,
):
    """Simulate a partial scan of every frame of a signal.

    Parameters
    ----------
    signal : hyperspy.signals.Signal2D
        Full scan(s), lazy or not, any navigation shape.
    path : str
        Scan path: ``"spiral"``, ``"grid"``, ``"jittered_grid"``, ``"random"``,
        ``"lissajous"``, ``"line_hop"`` or ``"lines"``.
    coverage : float
        Fraction of pixels to sample, in (0, 1].
    seed : int, optional
        Seed for the path and the noise, in [0, 2**63); a random one is drawn
        and recorded in the metadata when omitted, so every result can be
        reproduced.
    noise : NoiseModel or dict, optional
        Shot noise, detector noise and scan distortions; clean by default.
    vary_per_frame : bool
        Use a different path (independently seeded) for every frame of a stack;
        by default all frames share one path, as a fixed scan generator would.
    batch_size : int
        Frames per dask block.
    lazy_output : bool, optional
        Return a lazy signal; default: as the input.
    show_progressbar : bool, optional
        Progress bar when computing (default: HyperSpy's preference).
    **path_options
        Options of the path function (see :mod:`hyperspy_partialscan.paths`).

    Returns
    -------
    PartialScan2D or LazyPartialScan2D
        float32 with NaN at unsampled pixels; axes, metadata and
        original_metadata of the input, and the simulation recorded in
        ``metadata.Signal.Partial_scan`` (``coverage_measured`` is that of
        the first frame's path). ``metadata.Signal.Noise_properties`` is kept
        for clean simulations (without its data-sized ``variance``) and
        dropped when noise is simulated.

    Raises
    ------
    ValueError
        Unknown path, invalid coverage, path options, noise parameters or
        seed, or a signal that is not a real-valued image stack.
    TypeError
        Unknown path option, or not a HyperSpy signal.
    """
    validate_signal2d(signal, "to_partial_scan")
    if path not in PATHS:
        raise ValueError(f"unknown scan path {path!r}; choose one of {', '.join(PATHS)}")
    coverage = validate_coverage(coverage)
    noise = NoiseModel.coerce(noise)
    seed = _random_seed() if seed is None else check_seed(seed)
    shape = signal.axes_manager.signal_shape[::-1]
    # generate once eagerly: validates the options and gives the measured coverage
    first = generate_path(path, shape, coverage, path_rng(seed, 0, vary_per_frame), **path_options)
    sim = _Simulator(first, path, coverage, path_options, noise, seed, vary_per_frame)
    data = signal.data
    if data.dtype == bool:
        data = data.astype(np.float32)
    lazy_output = signal._lazy if lazy_output is None else lazy_output
    result = map_frames(
        data,
        sim,
        batch_size=navigation_chunks,
        name="to-partial-scan",
        token=(path, coverage, seed, sorted(path_options.items()), noise.as_dict(), vary_per_frame),
        with_indices=True,
    )
    if not lazy_output:
        result = compute(result, show_progressbar)
    # simulated noise makes the detector's variance model stale
    title = f"{signal.metadata.General.title} ({coverage * 100:.3g} % {path.replace('_', ' ')})".strip()
    out = signal_like(signal, result, signal_type="partial_scan", title=title, keep_noise_model=noise.is_clean)
    record = {
        "path": path,
        "coverage_requested": coverage,
        "coverage_measured": first.coverage,
        "seed": seed,
        "frame_shape": [int(n) for n in shape],
        "vary_per_frame": bool(vary_per_frame),
        "path_options": dict(path_options),
        "path_parameters": _plain(first.options),
        "noise": noise.as_dict(),
        "source": "simulated",
        "package_version": __version__,
    }
    out.metadata.set_item("Signal.Partial_scan", record)
    return out


def _plain(d):
    """JSON/HDF5-friendly copy of a parameter dictionary."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        elif isinstance(v, (list, tuple)):
            v = [x.item() if isinstance(x, (np.floating, np.integer)) else x for x in v]
        out[k] = v
    return out


def as_partial_scan(signal, mask=None, unscanned_value=0, *, lazy_output=None, show_progressbar=None):
    """Convert a real acquisition stored densely into a partial scan.

    Parameters
    ----------
    signal : hyperspy.signals.Signal2D
        Acquisition with unscanned positions filled with ``unscanned_value``
        (custom-scan software typically writes zeros there).
    mask : array-like or Signal2D, optional
        Boolean, True where sampled; the frame shape (shared by all frames) or the
        full data shape. Numpy or dask. Overrides ``unscanned_value``.
    unscanned_value : float or None
        Value marking unscanned pixels when no mask is given (NaN already marks
        them, always).
    lazy_output : bool, optional
        Default: as the input.
    show_progressbar : bool, optional
        Progress bar when a lazy input (or mask) is computed for a non-lazy
        output (default: HyperSpy's preference).

    Returns
    -------
    PartialScan2D or LazyPartialScan2D
        float32 copy with NaN at unscanned positions (the input is not modified);
        ``metadata.Signal.Partial_scan.coverage_measured`` is recorded for
        non-lazy output. ``metadata.Signal.Noise_properties`` is kept, without
        its data-sized ``variance``.

    Raises
    ------
    TypeError
        Non-boolean mask, or not a real-valued HyperSpy signal.
    ValueError
        Mask shape matching neither the frame nor the data, a non-numeric
        ``unscanned_value``, or a signal that is not an image stack.
    """
    import dask.array as da

    from .engine import navigation_chunks

    validate_signal2d(signal, "as_partial_scan")
    data = signal.data
    lazy_output = signal._lazy if lazy_output is None else bool(lazy_output)
    m = None
    if mask is not None:
        m = getattr(mask, "data", mask)
        m = m if isinstance(m, da.Array) else np.asarray(m)
        if m.dtype != bool:
            raise TypeError(f"mask must be boolean (True = sampled), got {m.dtype}")
        sig_shape = data.shape[-2:]
        if m.shape not in (sig_shape, data.shape):
            raise ValueError(
                f"mask shape {m.shape} matches neither the frame shape {sig_shape} nor the data shape {data.shape}"
            )
    elif unscanned_value is not None:
        if isinstance(unscanned_value, (bool, np.bool_)) or not np.isscalar(unscanned_value):
            raise ValueError(f"unscanned_value must be a number or None, not {unscanned_value!r}")
        try:
            unscanned_value = float(unscanned_value)
        except (TypeError, ValueError):
            raise ValueError(f"unscanned_value must be a number or None, not {unscanned_value!r}") from None
    use_dask = lazy_output or isinstance(data, da.Array) or isinstance(m, da.Array)
    xp = da if use_dask else np
    if use_dask and not isinstance(data, da.Array):
        data = da.from_array(data, chunks=navigation_chunks(data.shape, 16))
    values = data.astype(np.float32)  # a copy: the input is never modified
    nan = np.float32(np.nan)
    if m is not None:
        values = xp.where(xp.broadcast_to(m, data.shape), values, nan)
    elif unscanned_value is not None and np.isfinite(unscanned_value):
        values = xp.where(data != unscanned_value, values, nan)
    if not lazy_output and use_dask:
        values = compute(values, show_progressbar)
    out = signal_like(signal, values, signal_type="partial_scan")
    record = {"source": "acquired", "package_version": __version__}
    if mask is None:
        record["unscanned_value"] = unscanned_value
    if not lazy_output:
        record["coverage_measured"] = float(np.isfinite(values).mean())
    out.metadata.set_item("Signal.Partial_scan", record)
    return out


def from_scan_positions(positions, intensities, shape, *, axes=None, title="", metadata=None):
    """Build a partial scan from a list of probe positions and their intensities.

    Parameters
    ----------
    positions : array-like
        (N, 2) probe positions (row, column) in pixels, in acquisition order
        (e.g. read from a custom-scan coordinates file). Non-integer positions
        are assigned to the nearest pixel.
    intensities : array-like
        (N,) measured intensities.
    shape : tuple of int
        Frame shape (rows, columns).
    axes : list of dict, optional
        HyperSpy axes dictionaries for (rows, columns) (scale, offset, units, name).
    title : str
    metadata : dict, optional
        Extra metadata.

    Returns
    -------
    PartialScan2D
        Repeated hits on one pixel are averaged; the ordered positions are kept
        in ``metadata.Signal.Partial_scan.positions`` for :meth:`plot_scan_path`.

    Raises
    ------
    ValueError
        Mismatched lengths, non-finite values, positions outside the field, or
        ``axes`` that are not two axis dictionaries.
    TypeError
        Complex or non-numeric positions or intensities.
    """
    from hyperspy.signals import Signal2D

    pos, val = np.asarray(positions), np.asarray(intensities)
    for name, a in (("positions", pos), ("intensities", val)):
        if np.iscomplexobj(a) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise TypeError(f"{name} must be real numbers, got {a.dtype}")
    pos, val = pos.astype(np.float64), val.astype(np.float64)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be two positive integers, got {shape}")
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must have shape (N, 2), got {pos.shape}")
    if val.shape != (pos.shape[0],):
        raise ValueError(f"intensities must have shape ({pos.shape[0]},) to match positions, got {val.shape}")
    if pos.shape[0] == 0:
        raise ValueError("no probe positions given")
    if not (np.isfinite(pos).all() and np.isfinite(val).all()):
        raise ValueError("positions and intensities must be finite")
    if axes is not None and (len(axes) != 2 or not all(isinstance(a, dict) for a in axes)):
        raise ValueError("axes must be a list of two axis dictionaries (rows, then columns)")
    idx = np.rint(pos).astype(np.int64)
    bad = (idx[:, 0] < 0) | (idx[:, 0] >= shape[0]) | (idx[:, 1] < 0) | (idx[:, 1] >= shape[1])
    if bad.any():
        first = np.flatnonzero(bad)[0]
        raise ValueError(
            f"{int(bad.sum())} probe position(s) fall outside the {shape[0]}x{shape[1]} field "
            f"(first: index {first}, position {pos[first].tolist()})"
        )
    flat = idx[:, 0] * shape[1] + idx[:, 1]
    n = np.bincount(flat, minlength=shape[0] * shape[1])
    s = np.bincount(flat, weights=val, minlength=shape[0] * shape[1])
    data = np.full(shape[0] * shape[1], np.nan, np.float32)
    hit = n > 0
    data[hit] = s[hit] / n[hit]
    sig = Signal2D(data.reshape(shape)) if axes is None else Signal2D(data.reshape(shape), axes=axes)
    sig.metadata.General.title = title
    sig.set_signal_type("partial_scan")
    if metadata:
        sig.metadata.add_dictionary(metadata)
    sig.metadata.set_item(
        "Signal.Partial_scan",
        {
            "source": "scan_positions",
            "positions": pos,
            "repeated_hits": int((n > 1).sum()),
            "coverage_measured": float(hit.mean()),
            "package_version": __version__,
        },
    )
    return sig
