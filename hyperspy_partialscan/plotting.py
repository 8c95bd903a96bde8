"""Plots: the scan path over an image; a partial scan, its completion and the completion's uncertainty side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import check_number
from .paths import generate_path
from .simulate import path_rng

if TYPE_CHECKING:
    from hyperspy.signals import BaseSignal
    from matplotlib.axes import Axes

__all__ = ["plot_scan_path", "scan_path_of", "plot_completion", "split_flybacks", "UNSAMPLED_COLOUR", "FLYBACK_PIXELS"]

#: colour of unsampled (NaN) pixels in plots
UNSAMPLED_COLOUR = "tab:cyan"


def scan_path_of(signal: BaseSignal, index: int | None = None) -> np.ndarray:
    """Ordered probe positions (N, 2) of a partial scan's frame.

    Regenerated from the recorded path name, seed and options for simulated
    scans, or read from ``metadata.Signal.Partial_scan.positions`` for scans
    built with :func:`from_scan_positions`.

    Parameters
    ----------
    signal : PartialScan2D
        A partial scan made by :func:`to_partial_scan` or
        :func:`from_scan_positions` (or loaded from a file saved from one).
    index : int, optional
        Flat navigation index of the frame (default: the current one).

    Returns
    -------
    numpy.ndarray
        (N, 2) float (row, column) positions in pixels, in acquisition order.

    Raises
    ------
    ValueError
        If the signal records no scan path, or its frames were cropped or
        resized after the simulation (the recorded path no longer fits).
    """
    md = signal.metadata.get_item("Signal.Partial_scan")
    if md is None:
        raise ValueError(
            "this signal records no scan path: only partial scans made by to_partial_scan or "
            "from_scan_positions know their probe order"
        )
    am = signal.axes_manager
    shape = tuple(am.signal_shape[::-1])
    recorded = md.get_item("frame_shape")
    if recorded is not None and tuple(int(n) for n in np.asarray(recorded)) != shape:
        raise ValueError(
            f"the scan path was recorded for {int(recorded[0])}x{int(recorded[1])} frames but this signal's frames "
            f"are {shape[0]}x{shape[1]} (cropped or resized after the scan): the recorded path does not apply"
        )
    if md.has_item("positions"):
        pos = md.positions
        return np.asarray(pos.compute() if hasattr(pos, "compute") else pos, dtype=np.float64)
    if md.get_item("source") == "adaptive":
        raise ValueError("an adaptive scan of a stack records per-frame summaries, not each frame's ordered positions "
                         "(they differ per frame): scan the frame on its own with adaptive_scan to see its path")
    if md.get_item("source") != "simulated":
        raise ValueError("this partial scan was not simulated and has no recorded probe positions")
    if index is None:
        index = int(np.ravel_multi_index(am.indices[::-1], am.navigation_shape[::-1])) if am.navigation_dimension else 0
    opts = md.path_options.as_dictionary() if hasattr(md.path_options, "as_dictionary") else dict(md.path_options)
    rng = path_rng(md.seed, index, md.vary_per_frame)
    return generate_path(md.path, shape, md.coverage_requested, rng, **opts).positions


def plot_scan_path(signal: BaseSignal, ax: Axes | None = None, *, max_points: int = 20000, cmap: str = "gray",
                   line_color: str = "tab:orange", **kwargs: Any) -> Axes:
    """Draw the ordered scan path over the current frame (matplotlib).

    Parameters
    ----------
    signal : PartialScan2D
        A partial scan that records its path (see :func:`scan_path_of`).
    ax : matplotlib.axes.Axes, optional
        Axes to draw in (default: a new figure).
    max_points : int
        Draw at most this many path vertices (evenly decimated) to keep large
        scans responsive; the start and end markers are the path's true ends.
    cmap : str
        Colormap for the image.
    line_color : str
        Path colour; the start is marked with a circle and the end with a cross.
        An adaptive scan (:func:`adaptive_scan`, which records
        ``step_of_position``) also has its positions drawn coloured by the step
        that acquired them, with a colour bar labelled "step".
    **kwargs
        Passed to :meth:`matplotlib.axes.Axes.plot` for the path (a ``color``
        given here overrides ``line_color``).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn in: the frame (unsampled pixels NaN), the path, start
        and end markers, a legend, and the title ``"<path> path, <N> positions"``.

    Raises
    ------
    ValueError
        If the signal records no scan path (see :func:`scan_path_of`), or
        ``max_points`` is not a positive integer.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import hyperspy.api as hs
    >>> import hyperspy_partialscan as hps
    >>> from hyperspy_partialscan.specimens import nanoparticle_field
    >>> s = hs.signals.Signal2D(nanoparticle_field((64, 64), seed=0))
    >>> partial = hps.to_partial_scan(s, "spiral", 0.1, seed=0, show_progressbar=False)
    >>> ax = hps.plot_scan_path(partial, max_points=500)
    >>> type(ax).__name__, ax.get_title().split(",")[0]
    ('Axes', 'spiral path')
    >>> ax = partial.plot_scan_path(color="red")  # the method form

    An adaptive scan's positions are coloured by the step that acquired them:

    >>> scan = hps.adaptive_scan(s, 0.1, planner="static", steps=3, seed=0, show_progressbar=False)
    >>> ax = hps.plot_scan_path(scan)
    >>> int(ax.collections[0].get_array().max()), ax.figure.axes[-1].get_ylabel()
    (3, 'step')
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    import matplotlib.pyplot as plt

    check_number("max_points", max_points, low=1, integer=True)
    pos = scan_path_of(signal)
    frame = signal._get_current_data() if hasattr(signal, "_get_current_data") else signal.data
    frame = np.asarray(frame.compute() if hasattr(frame, "compute") else frame)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    sx, sy = signal.axes_manager.signal_axes
    extent = [sx.axis[0] - sx.scale / 2, sx.axis[-1] + sx.scale / 2,
              sy.axis[-1] + sy.scale / 2, sy.axis[0] - sy.scale / 2]
    colours = plt.get_cmap(cmap).copy()
    colours.set_bad(UNSAMPLED_COLOUR)
    ax.imshow(np.ma.masked_invalid(frame), cmap=colours, extent=extent, interpolation="nearest")
    step = max(-(-len(pos) // max_points), 1)  # ceil: at most max_points vertices
    p = pos[::step]
    kwargs.setdefault("lw", 0.6)
    if "c" not in kwargs:
        kwargs.setdefault("color", line_color)
    segments, jumps = split_flybacks(p, max(FLYBACK_PIXELS, 2.0 * step))
    ax.plot(sx.offset + segments[:, 1] * sx.scale, sy.offset + segments[:, 0] * sy.scale, **kwargs)
    if len(jumps):
        ax.plot(sx.offset + jumps[:, 1] * sx.scale, sy.offset + jumps[:, 0] * sy.scale, ls=":", lw=0.5,
                color="0.6", label=f"flybacks ({int(np.isnan(jumps[:, 0]).sum())})")
    steps = signal.metadata.get_item("Signal.Partial_scan.step_of_position")
    if steps is not None:
        steps = np.asarray(steps)
        n = int(steps.max()) + 1  # one colour per step, integer ticks
        dots = ax.scatter(sx.offset + p[:, 1] * sx.scale, sy.offset + p[:, 0] * sy.scale, c=steps[::step], s=4,
                          cmap=plt.get_cmap("viridis", n), vmin=-0.5, vmax=n - 0.5, zorder=3)
        ax.figure.colorbar(dots, ax=ax, fraction=0.046, pad=0.04, label="step", ticks=range(n) if n <= 12 else None)
    colour = kwargs.get("color", kwargs.get("c"))
    ends = [pos[:1], pos[-1:]]
    for end, marker, ms, label in zip(ends, ("o", "x"), (6, 7), ("start", "end"), strict=False):
        ax.plot(sx.offset + end[:, 1] * sx.scale, sy.offset + end[:, 0] * sy.scale, marker, color=colour, ms=ms,
                label=label)
    md = signal.metadata.Signal.Partial_scan
    name = md.get_item("path", md.get_item("source", "scan"))
    ax.set_title(f"{name} path, {len(pos)} positions")
    ax.set_xlabel(f"{sx.name} ({sx.units})")
    ax.set_ylabel(f"{sy.name} ({sy.units})")
    ax.legend(loc="upper right", fontsize="small")
    return ax


#: a move between consecutive probe positions longer than this (pixels) is a flyback, not part of the path
FLYBACK_PIXELS = 3.0


def split_flybacks(positions, threshold=FLYBACK_PIXELS):
    """Split an ordered path into the continuous segments the probe scans and the jumps between them.

    Parameters
    ----------
    positions : numpy.ndarray
        (N, 2) ordered probe positions.
    threshold : float
        A step longer than this (pixels) is a jump (flyback).

    Returns
    -------
    segments, jumps : numpy.ndarray
        (M, 2) arrays for plotting, pieces separated by rows of NaN: the
        continuous segments, and the jumps as two-point pieces.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.plotting import split_flybacks
    >>> seg, jumps = split_flybacks(np.array([[0, 0], [0, 1], [0, 2], [10, 0], [10, 1]], float))
    >>> int(np.isnan(seg[:, 0]).sum()), jumps[:2].tolist()
    (1, [[0.0, 2.0], [10.0, 0.0]])
    """
    pos = np.asarray(positions, np.float64)
    if len(pos) < 2:
        return pos, np.empty((0, 2))
    far = np.flatnonzero(np.hypot(*np.diff(pos, axis=0).T) > threshold)
    gap = np.full((1, 2), np.nan)
    pieces = np.split(pos, far + 1)
    segments = np.concatenate([x for piece in pieces for x in (piece, gap)][:-1])
    jumps = np.concatenate([x for k in far for x in (pos[k : k + 2], gap)]) if len(far) else np.empty((0, 2))
    return segments, jumps


def _frame(signal, index):
    """The 2-D frame at flat navigation ``index`` (default: the current one) as numpy."""
    am = signal.axes_manager
    if index is None:
        index = int(np.ravel_multi_index(am.indices[::-1], am.navigation_shape[::-1])) if am.navigation_dimension else 0
    data = signal.data.reshape((-1,) + tuple(am.signal_shape[::-1]))[index]
    return np.asarray(data.compute() if hasattr(data, "compute") else data, np.float64)


def plot_completion(partial: BaseSignal, completed: BaseSignal, sigma: BaseSignal | None = None, *,
                    truth: BaseSignal | None = None, index: int | None = None, cmap: str = "gray",
                    sigma_cmap: str = "magma", figsize: tuple | None = None):
    """Draw a partial scan, its completion and the completion's uncertainty side by side, axes shared.

    Unsampled pixels of the partial scan are drawn in :data:`UNSAMPLED_COLOUR`,
    never confused with bright pixels. With ``truth`` (the full frame), a
    fourth panel shows the actual error against the blurred truth (the target
    sigma refers to) on sigma's colour scale, so the two can be compared by eye.

    Parameters
    ----------
    partial : hyperspy.signals.Signal2D
        The partial scan (NaN = unsampled).
    completed : hyperspy.signals.Signal2D
        Its completion.
    sigma : hyperspy.signals.Signal2D, optional
        The completion's uncertainty (``complete_partial_scan(..., uncertainty=True)``).
    truth : hyperspy.signals.Signal2D, optional
        The full frame, when known (simulations).
    index : int, optional
        Flat navigation index of the frame to draw (default: the current one).
    cmap, sigma_cmap : str
        Colour maps of the images and of sigma and the error.
    figsize : tuple, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np, hyperspy.api as hs
    >>> import hyperspy_partialscan as hps
    >>> s = hs.signals.Signal2D(np.random.default_rng(0).uniform(size=(32, 32)))
    >>> p = hps.to_partial_scan(s, "random", 0.3, seed=0, show_progressbar=False)
    >>> c = hps.complete_partial_scan(p, "linear", show_progressbar=False)
    >>> len(hps.plot_completion(p, c).axes)
    2
    """
    import matplotlib.pyplot as plt

    from .metrics import blur_target

    panels = [("partial scan", _frame(partial, index), cmap), ("completion", _frame(completed, index), cmap)]
    if sigma is not None:
        panels.append(("uncertainty (sigma)", _frame(sigma, index), sigma_cmap))
    if truth is not None:
        err = np.abs(panels[1][1] - blur_target(_frame(truth, index)))
        panels.append(("|error| vs blurred truth", err, sigma_cmap))
    fig, axes = plt.subplots(1, len(panels), sharex=True, sharey=True, figsize=figsize or (3.2 * len(panels), 3.4),
                             squeeze=False)
    finite = panels[1][1][np.isfinite(panels[1][1])]
    lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    scale = max(np.percentile(p[1], 99) for p in panels[2:]) if len(panels) > 2 else None
    for ax, (title, image, cm) in zip(axes[0], panels):
        colours = plt.get_cmap(cm).copy()
        colours.set_bad(UNSAMPLED_COLOUR)
        limits = (lo, hi) if cm == cmap else (0, scale)
        im = ax.imshow(np.ma.masked_invalid(image), cmap=colours, vmin=limits[0], vmax=limits[1])
        ax.set_title(title)
        ax.set_axis_off()
        if cm != cmap:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig
