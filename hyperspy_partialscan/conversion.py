"""Signal-level creation of partial scans: simulated, from dense acquisitions, from position lists."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ._docstrings import fill_doc
from ._signal_tools import signal_like, validate_signal2d
from ._validation import check_number, check_shape, seed_or_fresh
from ._version import __version__
from .engine import compute, default_navigation_chunks, map_frames
from .paths import PATHS, generate_path, validate_coverage
from .simulate import NoiseModel, frame_rng, path_rng, sample_frame

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hyperspy.signals import BaseSignal

__all__ = ["to_partial_scan", "as_partial_scan", "from_scan_positions", "warn_float32_precision",
           "FLOAT32_EXACT_INTEGER", "COVERAGE_TOLERANCE"]

#: integers above this magnitude are not all exact in float32 (the package's working dtype)
FLOAT32_EXACT_INTEGER = 2**24

#: to_partial_scan warns when the path's coverage differs from the request by more than this factor
COVERAGE_TOLERANCE = 2.0


def warn_float32_precision(data: Any, what: str, stacklevel: int = 3) -> int:
    """Warn when integer ``data`` holds values that float32 cannot represent exactly.

    The package works in float32: integers above :data:`FLOAT32_EXACT_INTEGER`
    (2**24) in magnitude may be rounded. Checked only for in-memory integer
    data of 4 or more bytes per value (cheap: one ``max``/``min`` unless
    there are large values); dask data are not read.

    Returns
    -------
    int
        The number of values that change in float32 (0 when not checked).

    Examples
    --------
    >>> import warnings, numpy as np
    >>> from hyperspy_partialscan.conversion import warn_float32_precision
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn_float32_precision(np.array([1, 2**24 + 1, 2**25 + 4], np.uint32), "test")
    1
    >>> print(w[0].message)  # doctest: +ELLIPSIS
    test: 1 integer value(s) above 2**24 = 16777216 in magnitude change when converted to float32 ...
    """
    dtype = getattr(data, "dtype", None)
    if dtype is None or dtype.kind not in "iu" or dtype.itemsize < 4 or not isinstance(data, np.ndarray):
        return 0
    if data.size == 0:
        return 0
    limit = FLOAT32_EXACT_INTEGER
    if data.max() <= limit and (dtype.kind == "u" or data.min() >= -limit):
        return 0
    big = data[(data > limit) | (data < -limit)] if dtype.kind == "i" else data[data > limit]
    changed = int(np.count_nonzero(big.astype(np.float32).astype(np.float64) != big.astype(np.float64)))
    if changed:
        warnings.warn(
            f"{what}: {changed} integer value(s) above 2**24 = {limit} in magnitude change when converted to float32 "
            f"(largest magnitude {int(np.abs(big.astype(np.float64)).max())}); their last digits are rounded. "
            "Rescale the data (e.g. divide by a gain) first if that precision matters.",
            UserWarning,
            stacklevel=stacklevel,
        )
    return changed


class _Simulator:
    """Picklable per-batch simulator (for dask workers)."""

    def __init__(self, path, name, coverage, options, noise, seed, vary):
        self.path, self.name, self.coverage = path, name, coverage
        self.options, self.noise, self.seed, self.vary = options, noise, seed, vary

    def __call__(self, frames, indices):
        out = np.empty(frames.shape, np.float32)
        for k, (f, i) in enumerate(zip(frames, indices, strict=False)):
            path = (
                generate_path(self.name, f.shape, self.coverage, path_rng(self.seed, i, True), **self.options)
                if self.vary
                else self.path
            )
            bad = ~np.isfinite(f)
            if bad.any():  # never sampled: read a finite stand-in, then mark NaN
                fill = np.median(f[~bad]) if not bad.all() else 0.0
                f = np.where(bad, fill, f)
            out[k] = sample_frame(f, path, self.noise, frame_rng(self.seed, i, stream=1))
            if bad.any():
                out[k][bad] = np.nan
        return out


@fill_doc(TOL=COVERAGE_TOLERANCE)
def to_partial_scan(
    signal: BaseSignal,
    path: str = "spiral",
    coverage: float = 0.05,
    *,
    seed: int | None = None,
    noise: NoiseModel | dict | None = None,
    vary_per_frame: bool = False,
    navigation_chunks: int | None = None,
    lazy_output: bool | None = None,
    show_progressbar: bool | None = None,
    **path_options: Any,
) -> BaseSignal:
    """Simulate a partial scan of every frame of a signal.

    Each frame is read along a scan path: the sampled pixels keep the frame's
    value (plus simulated noise, if any), every other pixel is NaN.

    Parameters
    ----------
    signal : hyperspy.signals.Signal2D
        Full scan(s), lazy or not, any navigation shape (at least one frame);
        never modified. Non-finite pixels (NaN, inf) are never sampled: the
        output is NaN there. For in-memory input they are counted and a
        UserWarning says how many; a frame without any finite pixel is an
        error. Lazy input is masked the same way but not read in advance, so
        there is no warning. Integer data are converted to float32 (with a
        warning when large integers lose precision).
    path : str
        Scan path: ``"spiral"``, ``"grid"``, ``"jittered_grid"``, ``"random"``,
        ``"lissajous"``, ``"line_hop"`` or ``"lines"``.
    coverage : float
        Fraction of pixels to sample, in (0, 1]. A path cannot sample less
        than its own minimum (one pixel, or one spiral arm): when the path's
        coverage differs from the request by more than a factor {TOL:g}, a
        UserWarning says what was sampled instead.
    seed : int, optional
        Seed for the path and the noise, in [0, 2**63); a random one is drawn
        and recorded in the metadata when omitted, so every result can be
        reproduced.
    noise : NoiseModel or dict, optional
        Shot noise, detector noise and scan distortions; clean by default.
    vary_per_frame : bool
        Use a different path (independently seeded) for every frame of a stack;
        by default all frames share one path, as a fixed scan generator would.
    {navigation_chunks}
    {lazy_output}
    {show_progressbar}
    **path_options
        Options of the path function (see :mod:`hyperspy_partialscan.paths`).

    Returns
    -------
    PartialScan2D or LazyPartialScan2D
        float32 with NaN at unsampled pixels; axes, metadata and
        original_metadata of the input, title ``"<title> (<coverage> % <path>)"``,
        and the simulation recorded in ``metadata.Signal.Partial_scan``:
        ``coverage_requested``, ``coverage_path`` (the nominal coverage of the
        first frame's path) and, for computed (non-lazy) output,
        ``coverage_measured``, the actual fraction of finite output pixels (a
        float for one frame, a list with one value per frame, in flat
        navigation order, for several). For lazy output the actual coverage
        is not recorded: it is ``signal.coverage`` (which computes it).
        ``metadata.Signal.Noise_properties`` is kept for clean simulations
        (without its data-sized ``variance``) and dropped when noise is
        simulated.

    Raises
    ------
    ValueError
        Unknown path, invalid coverage, path options, noise parameters or
        seed, a signal that is not a real-valued image stack, no frames
        (navigation size 0), or an in-memory frame without a finite pixel.
    TypeError
        Unknown path option, or not a HyperSpy signal.

    Warns
    -----
    UserWarning
        Non-finite input pixels (with their count), integers that lose
        precision in float32, or a path coverage far from the request.

    Examples
    --------
    >>> import hyperspy.api as hs
    >>> import hyperspy_partialscan as hps
    >>> from hyperspy_partialscan.specimens import nanoparticle_field
    >>> s = hs.signals.Signal2D(nanoparticle_field((64, 64), seed=0))
    >>> partial = hps.to_partial_scan(s, "random", coverage=0.25, seed=0, show_progressbar=False)
    >>> type(partial).__name__, partial.data.dtype.name
    ('PartialScan2D', 'float32')
    >>> md = partial.metadata.Signal.Partial_scan
    >>> md.path, md.coverage_requested, round(md.coverage_measured, 2)
    ('random', 0.25, 0.25)

    A partial scan can be simulated again from its method, here lazily, with
    one path per frame of a stack:

    >>> import numpy as np
    >>> stack = hs.signals.Signal2D(np.stack([s.data, s.data]))
    >>> lazy = hps.to_partial_scan(stack, "grid", 0.25, seed=1, vary_per_frame=True, lazy_output=True)
    >>> type(lazy).__name__, round(lazy.coverage, 2), lazy.metadata.Signal.Partial_scan.has_item("coverage_measured")
    ('LazyPartialScan2D', 0.25, False)
    >>> again = partial.to_partial_scan("spiral", 0.1, seed=2, show_progressbar=False)
    >>> round(again.metadata.Signal.Partial_scan.coverage_path, 2)
    0.1
    """
    validate_signal2d(signal, "to_partial_scan")
    if path not in PATHS:
        raise ValueError(f"unknown scan path {path!r}; choose one of {', '.join(PATHS)}")
    coverage = validate_coverage(coverage)
    noise = NoiseModel.coerce(noise)
    seed = seed_or_fresh(seed)
    check_number("navigation_chunks", navigation_chunks, low=1, integer=True, allow_none=True)
    shape = signal.axes_manager.signal_shape[::-1]
    # generate once eagerly: validates the options and gives the path's coverage
    first = generate_path(path, shape, coverage, path_rng(seed, 0, vary_per_frame), **path_options)
    if not (coverage / COVERAGE_TOLERANCE <= first.coverage <= coverage * COVERAGE_TOLERANCE):
        warnings.warn(
            f"to_partial_scan: coverage {coverage:g} was requested but the {path!r} path on a {shape[0]}x{shape[1]} "
            f"frame samples {first.coverage:.4g} ({first.coverage * 100:.3g} % of the pixels, "
            f"{first.mask.sum()} pixel(s)); that is the coverage recorded and simulated",
            UserWarning,
            stacklevel=2,
        )
    sim = _Simulator(first, path, coverage, path_options, noise, seed, vary_per_frame)
    data = signal.data
    if data.dtype == bool:
        data = data.astype(np.float32)
    if not signal._lazy:
        _check_finite_input(data, "to_partial_scan")
        warn_float32_precision(data, "to_partial_scan")
    lazy_output = signal._lazy if lazy_output is None else lazy_output
    result = map_frames(
        data,
        sim,
        batch_size=navigation_chunks or default_navigation_chunks(shape),
        name="to-partial-scan",
        token=(path, coverage, seed, sorted(path_options.items()), noise.as_dict(), vary_per_frame),
        with_indices=True,
    )
    if not lazy_output:
        result = compute(result, show_progressbar=show_progressbar)
    # simulated noise makes the detector's variance model stale
    title = f"{signal.metadata.General.title} ({coverage * 100:.3g} % {path.replace('_', ' ')})".strip()
    out = signal_like(signal, result, signal_type="partial_scan", title=title, keep_noise_model=noise.is_clean)
    record = {
        "path": path,
        "coverage_requested": coverage,
        "coverage_path": first.coverage,
        "seed": seed,
        "frame_shape": [int(n) for n in shape],
        "vary_per_frame": bool(vary_per_frame),
        "path_options": dict(path_options),
        "path_parameters": _plain(first.options),
        "noise": noise.as_dict(),
        "source": "simulated",
        "package_version": __version__,
    }
    if not lazy_output:
        per_frame = np.isfinite(result).reshape(-1, shape[0] * shape[1]).mean(axis=1)
        record["coverage_measured"] = float(per_frame[0]) if len(per_frame) == 1 else [float(c) for c in per_frame]
    out.metadata.set_item("Signal.Partial_scan", record)
    return out


def _check_finite_input(data: np.ndarray, what: str) -> None:
    """Raise for frames without a finite pixel; warn with the count of non-finite pixels (in-memory data)."""
    if data.dtype.kind != "f":
        return
    finite = np.isfinite(data)
    bad = int(finite.size - np.count_nonzero(finite))
    if not bad:
        return
    per_frame = finite.reshape((-1,) + finite.shape[-2:]).any(axis=(1, 2))
    if not per_frame.all():
        raise ValueError(
            f"{what}: {int((~per_frame).sum())} frame(s) have no finite pixel (all NaN or inf), first at flat "
            f"navigation index {int(np.flatnonzero(~per_frame)[0])}: there is nothing to sample"
        )
    warnings.warn(
        f"{what}: {bad} non-finite input pixel(s) (NaN or inf) are masked: never sampled, NaN in the output",
        UserWarning,
        stacklevel=3,
    )


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


@fill_doc
def as_partial_scan(
    signal: BaseSignal,
    mask: Any = None,
    unscanned_value: float | None = None,
    *,
    lazy_output: bool | None = None,
    show_progressbar: bool | None = None,
) -> BaseSignal:
    """Convert a real acquisition stored densely into a partial scan.

    Which pixels were not scanned must be said: by a ``mask``, or by the
    ``unscanned_value`` that the acquisition software wrote there (custom-scan
    software often writes zeros). Zeros are not assumed, because low-dose
    data have real zero counts. NaN pixels are always unscanned, so data
    that already hold NaN at the unscanned pixels need neither.

    Parameters
    ----------
    signal : hyperspy.signals.Signal2D
        Acquisition, lazy or not, any navigation shape (at least one frame);
        never modified.
    mask : array-like or Signal2D, optional
        Boolean, True where sampled; the frame shape (shared by all frames) or
        the full data shape. Numpy or dask. When ``unscanned_value`` is given
        too, the mask wins: pixels it marks as scanned stay measured, and a
        UserWarning counts those that hold ``unscanned_value`` (counted for
        in-memory data and mask only).
    unscanned_value : float, optional
        Value marking unscanned pixels when no mask is given (e.g. ``0``).
        Required, unless ``mask`` is given or the data already contain NaN.
    {lazy_output}
    {show_progressbar}

    Returns
    -------
    PartialScan2D or LazyPartialScan2D
        float32 copy with NaN at unscanned positions; axes, metadata and
        original_metadata of the input (``metadata.Signal.Noise_properties``
        without its data-sized ``variance``). ``metadata.Signal.Partial_scan``
        records ``source = "acquired"``, ``unscanned_marked_by`` (``"mask"``,
        ``"unscanned_value"`` or ``"NaN"``), the ``unscanned_value`` used, and
        for non-lazy output ``coverage_measured``, the fraction of finite
        pixels over the whole signal.

    Raises
    ------
    ValueError
        Neither ``mask`` nor ``unscanned_value`` given for data without NaN
        (lazy data are read once to look for NaN), a mask shape matching
        neither the frame nor the data, a non-numeric ``unscanned_value``, no
        frames (navigation size 0), or a signal that is not an image stack.
    TypeError
        Non-boolean mask, or not a real-valued HyperSpy signal.

    Warns
    -----
    UserWarning
        Scanned pixels equal to ``unscanned_value`` (both given), or integers
        that lose precision in float32.

    Examples
    --------
    >>> import numpy as np, hyperspy.api as hs
    >>> import hyperspy_partialscan as hps
    >>> counts = np.array([[5, 0, 3], [0, 0, 7]])
    >>> s = hs.signals.Signal2D(counts)
    >>> hps.as_partial_scan(s, unscanned_value=0).data
    array([[ 5., nan,  3.],
           [nan, nan,  7.]], dtype=float32)

    With a mask, a zero count at a scanned pixel stays a measurement:

    >>> scanned = np.array([[True, True, True], [False, False, True]])
    >>> p = hps.as_partial_scan(s, mask=scanned)
    >>> p.data
    array([[ 5.,  0.,  3.],
           [nan, nan,  7.]], dtype=float32)
    >>> p.metadata.Signal.Partial_scan.unscanned_marked_by, round(p.coverage, 3)
    ('mask', 0.667)
    >>> hps.as_partial_scan(s)
    Traceback (most recent call last):
    ...
    ValueError: as_partial_scan needs to know which pixels were not scanned: ...
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
    if unscanned_value is not None:
        if isinstance(unscanned_value, (bool, np.bool_)) or not np.isscalar(unscanned_value):
            raise ValueError(f"unscanned_value must be a number or None, not {unscanned_value!r}")
        try:
            unscanned_value = float(unscanned_value)
        except (TypeError, ValueError):
            raise ValueError(f"unscanned_value must be a number or None, not {unscanned_value!r}") from None
    if m is None and (unscanned_value is None or np.isnan(unscanned_value)):
        has_nan = data.dtype.kind == "f" and bool(
            da.isnan(data).any().compute() if isinstance(data, da.Array) else np.isnan(data).any())
        if not has_nan:
            raise ValueError(
                "as_partial_scan needs to know which pixels were not scanned: give mask= (boolean, True where "
                "sampled) or unscanned_value= (the value the acquisition wrote there, e.g. unscanned_value=0 for "
                "software that writes zeros). Zeros are not assumed, since low-dose data have real zero counts; "
                "data with NaN at the unscanned pixels need neither, but these data hold no NaN."
            )
    if m is not None and unscanned_value is not None and not isinstance(data, da.Array) and not isinstance(
            m, da.Array):
        hits = np.isnan(data) if np.isnan(unscanned_value) else data == unscanned_value
        clash = int(np.count_nonzero(hits & np.broadcast_to(m, data.shape)))
        if clash:
            warnings.warn(
                f"as_partial_scan: {clash} pixel(s) that the mask marks as scanned hold unscanned_value="
                f"{unscanned_value:g}; the mask wins, so they are kept as measurements",
                UserWarning,
                stacklevel=2,
            )
    warn_float32_precision(data, "as_partial_scan")
    use_dask = lazy_output or isinstance(data, da.Array) or isinstance(m, da.Array)
    xp = da if use_dask else np
    if use_dask and not isinstance(data, da.Array):
        data = da.from_array(data, chunks=navigation_chunks(data.shape, 16))
    values = data.astype(np.float32)  # a copy: the input is never modified
    nan = np.float32(np.nan)
    if m is not None:
        values = xp.where(xp.broadcast_to(m, data.shape), values, nan)
        marked_by = "mask"
    elif unscanned_value is not None and np.isfinite(unscanned_value):
        values = xp.where(data != unscanned_value, values, nan)
        marked_by = "unscanned_value"
    else:
        marked_by = "NaN"
    if not lazy_output and use_dask:
        values = compute(values, show_progressbar=show_progressbar)
    out = signal_like(signal, values, signal_type="partial_scan")
    record = {"source": "acquired", "unscanned_marked_by": marked_by, "package_version": __version__}
    if marked_by == "unscanned_value":
        record["unscanned_value"] = unscanned_value
    if not lazy_output:
        record["coverage_measured"] = float(np.isfinite(values).mean())
    out.metadata.set_item("Signal.Partial_scan", record)
    return out


def from_scan_positions(
    positions: Any,
    intensities: Any,
    shape: Sequence[int],
    *,
    axes: list[dict] | None = None,
    title: str = "",
    metadata: dict | None = None,
) -> BaseSignal:
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

    Examples
    --------
    >>> import hyperspy_partialscan as hps
    >>> p = hps.from_scan_positions([[0, 0], [0, 1], [1.2, 1], [0, 1]], [1.0, 2.0, 3.0, 4.0], (2, 3))
    >>> p.data
    array([[ 1.,  3., nan],
           [nan,  3., nan]], dtype=float32)
    >>> md = p.metadata.Signal.Partial_scan
    >>> md.repeated_hits, round(md.coverage_measured, 3)
    (1, 0.5)
    """
    from hyperspy.signals import Signal2D

    pos, val = np.asarray(positions), np.asarray(intensities)
    for name, a in (("positions", pos), ("intensities", val)):
        if np.iscomplexobj(a) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise TypeError(f"{name} must be real numbers, got {a.dtype}")
    pos, val = pos.astype(np.float64), val.astype(np.float64)
    shape = check_shape(shape)
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
