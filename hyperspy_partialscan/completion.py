"""Signal-level completion of partial scans: classical methods and the trained generator."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from ._docstrings import fill_doc
from ._signal_tools import LAZY_NOTE, check_laziness, deliver, signal_like, validate_signal2d, variance_model
from ._validation import check_method_arguments, check_number
from ._version import __version__
from .conversion import warn_float32_precision
from .engine import FrameFunction, FrameNetwork, compute, default_navigation_chunks, map_frames, plan_network
from .inpainting import BIHARMONIC_MAX_PIXELS, CLASSICAL_METHODS, check_frame, complete_frame
from .uncertainty import MEANING

if TYPE_CHECKING:
    from pathlib import Path

    from hyperspy.signals import BaseSignal

__all__ = ["complete_partial_scan", "COMPLETION_METHODS", "GeneratorCompleter",
           "check_partial_frames", "measured_deviation"]

COMPLETION_METHODS = ("generator",) + tuple(CLASSICAL_METHODS)

#: default working tile of the generator: larger frames go through overlapping tiles
GENERATOR_TILE = 512
GENERATOR_OVERLAP = 64


def _keep(frames, out):
    sampled = np.isfinite(frames)
    out[sampled] = frames[sampled]
    return out


class GeneratorCompleter(FrameNetwork):
    """Picklable batch function running the completion network (see :class:`~.engine.FrameNetwork`).

    The network's input channels (fills, mask, distance) are built from each
    whole frame before tiling, so every tile takes its context from the whole
    frame (a tile without samples of its own is filled from its neighbours),
    and all tiles of a frame share one intensity scale.

    With an :class:`~hyperspy_partialscan.uncertainty.UncertaintySpec`, each
    frame gives two channels, the completion and its calibrated per-pixel
    uncertainty, from the same network inputs.
    """

    task = "completion"

    def __init__(self, plan, keep_measured=True, tile=GENERATOR_TILE, overlap=GENERATOR_OVERLAP, uncertainty=None):
        super().__init__(plan, tile=tile, overlap=overlap)
        self.keep_measured, self.uncertainty = keep_measured, uncertainty

    def check(self, frame, index):
        check_frame(frame, index)

    def prepare(self, frames, indices=None):
        from .models.features import completion_inputs

        inputs, scales = completion_inputs(frames)
        if self.uncertainty is not None:
            scales = [tuple(sc) + self.uncertainty.frame_terms(f) for f, sc in zip(frames, scales)]
        return inputs, scales

    def run(self, network, device, tiles, tile_scales):
        from .models.inference import run_network, to_intensity_scale

        raw = run_network(network, tiles, device, self.plan.precision)
        out = to_intensity_scale(raw, tile_scales)
        if self.uncertainty is None:
            return out
        return np.stack([out, self.uncertainty.sigma(tiles, raw, tile_scales, device)], axis=1)

    def finish(self, frames, out):
        if self.keep_measured:
            _keep(frames, out if out.ndim == 3 else out[:, 0])
        return out


def check_partial_frames(data):
    """Raise unless every frame has at least one sampled and one unsampled (NaN) pixel.

    Reads the data once (a dask array is computed, counts only).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.completion import check_partial_frames
    >>> check_partial_frames(np.array([[[1.0, np.nan]]]))
    >>> check_partial_frames(np.ones((2, 3, 3)))
    Traceback (most recent call last):
    ...
    ValueError: 2 frame(s) have no unsampled (NaN) pixel, first at flat navigation index 0: nothing to complete ...
    """
    import dask.array as da

    frames = data.reshape((-1,) + tuple(data.shape[-2:]))
    xp = da if isinstance(frames, da.Array) else np
    sampled = np.asarray(xp.isfinite(frames).sum(axis=(1, 2)))  # a dask count is computed here
    size = frames.shape[1] * frames.shape[2]
    for bad, what, hint in (
        (sampled == 0, "no sampled pixel (all NaN)", "nothing can be completed there"),
        (sampled == size, "no unsampled (NaN) pixel",
         "nothing to complete (a full scan is not a partial scan; a dense acquisition with zeros at the unscanned "
         "positions needs as_partial_scan(signal, mask=... or unscanned_value=...) first)"),
    ):
        if bad.any():
            raise ValueError(f"{int(bad.sum())} frame(s) have {what}, first at flat navigation index "
                             f"{int(np.flatnonzero(bad)[0])}: {hint}")


@fill_doc(TILE=GENERATOR_TILE, OVERLAP=GENERATOR_OVERLAP, BIHARMONIC_MAX_PIXELS=BIHARMONIC_MAX_PIXELS)
def complete_partial_scan(
    signal: BaseSignal,
    method: str = "generator",
    *,
    model: str | Path | None = None,
    navigation_chunks: int | None = None,
    network_batch_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    keep_measured: bool = True,
    tile_size: int = GENERATOR_TILE,
    uncertainty: bool = False,
    uncertainty_model: str | Path | None = None,
    inplace: bool = False,
    lazy_output: bool | None = None,
    show_progressbar: bool | None = None,
) -> BaseSignal | tuple[BaseSignal | None, BaseSignal] | None:
    """Complete partial scans: fill every unsampled (NaN) pixel.

    Parameters
    ----------
    signal : hyperspy.signals.Signal2D
        Partial scan(s), NaN = unsampled; lazy or not, any navigation shape (at
        least one frame). Every frame needs at least one sampled pixel and at
        least one unsampled (NaN) pixel: anything else is an error (checked up
        front for in-memory input, when the blocks are computed for lazy
        input). Dense acquisitions with zeros at unscanned pixels must be
        converted with :func:`as_partial_scan` first.
    method : str
        ``"generator"`` (trained network, default), ``"nearest"``,
        ``"linear"``, ``"cubic"`` or ``"biharmonic"`` (frames of at most
        {BIHARMONIC_MAX_PIXELS} pixels).
    {model}
    {navigation_chunks}
    {network_batch_size}
    {device}
    {precision}
    keep_measured : bool
        True (default): the measured samples are put back unchanged, so the
        output equals the input at every sampled pixel and only NaN pixels are
        filled. False: the output is the model's (or the interpolant's) value
        everywhere, sampled pixels included, so measured values may move (the
        generator smooths noise there; the interpolants reproduce the samples
        up to rounding).
    tile_size : int
        Generator only: frames larger than this (default {TILE}) go through
        overlapping tiles ({OVERLAP} px overlap, or a quarter of the tile if
        less; smoothly blended). The network inputs are built from the whole
        frame first.
    uncertainty : bool
        Also return ``sigma``, the completion's calibrated per-pixel
        uncertainty: the predicted standard deviation of its error at each
        pixel, in data units, with respect to the generator's training target,
        the Gaussian-blurred truth (5x5 kernel, sigma 2.5 px). A trained
        network predicts it from the same inputs, in the same pass over the
        data (one dask graph), calibrated per path family and coverage so that
        at least 68 % of the errors at unsampled pixels lie within sigma and 93 %
        within 2 sigma on held-out images, and raised towards the typical
        frame's actual RMSE as far as 72 % and 96 % (heavy-tailed errors make
        the root mean sigma² of a frame otherwise fall short of its RMSE). It
        follows the measurements' noise: HyperSpy's variance model in the
        metadata when present, else the noise a simulation recorded, else a
        blind estimate from neighbouring samples. At sampled pixels sigma is
        the predicted error of the kept measurement against the blurred truth
        (its noise and the blur). Generator only: classical interpolation has
        no calibrated error estimate (an error, never a silent zero).
    uncertainty_model : str or pathlib.Path, optional
        Uncertainty model name or path (default: the shipped one); it must
        have been trained for the generator used.
    {inplace}
    {lazy_output}
    {show_progressbar}

    Returns
    -------
    Signal2D or LazySignal2D or None
        An ordinary image (signal_type ``""``: nothing is unsampled any more)
        titled ``"Completed <title>"``, float32, with the axes, metadata and
        original_metadata of the input (``metadata.Signal.Noise_properties``
        without its data-sized ``variance``, which no longer matches). The
        provenance is in ``metadata.Signal.Partial_scan.Completion``: method,
        ``keep_measured``, package version, the model and device for the
        generator, and ``measured_rms_deviation``, the RMS difference between
        output and input at the sampled pixels in data units (0.0 with
        ``keep_measured=True``). When the input records a variance model
        (``metadata.Signal.Noise_properties.Variance_linear_model``),
        ``measured_rms_deviation_over_noise`` is the RMS of that difference
        divided by the noise, sqrt(gain_factor * max(value, 0) + gain_offset).
        For lazy output both are the string ``"not computed (lazy output)"``.
        None with ``inplace``.
    (completed, sigma)
        With ``uncertainty=True``: the completion as above (None with
        ``inplace``) and ``sigma``, a Signal2D of the same shape, axes and
        units titled ``"Uncertainty (sigma) of completed <title>"``; both
        record ``metadata.Signal.Partial_scan.Completion.uncertainty`` (model,
        calibration, meaning, noise source). For lazy output both are lazy and
        share one graph: compute them together (``dask.compute``) to read the
        data once.

    Raises
    ------
    ValueError
        Unknown method; no frames (navigation size 0); a frame with no sampled
        pixel or with no unsampled pixel; frames too large for biharmonic
        inpainting; ``model`` or ``network_batch_size`` with a classical
        method; ``uncertainty=True`` with a classical method or with
        ``keep_measured=False``; ``uncertainty_model`` without
        ``uncertainty=True``; no shipped uncertainty model for the generator
        (or one trained for another generator); an invalid ``tile_size``,
        ``navigation_chunks``, device or precision; or ``inplace`` with a
        change of laziness.
    FloatingPointError
        The method produced non-finite values (e.g. a diverged model); nothing
        is returned and an ``inplace`` signal is left unchanged.

    Warns
    -----
    UserWarning
        Integer input with values that lose precision in float32.

    Examples
    --------
    >>> import numpy as np, hyperspy.api as hs
    >>> import hyperspy_partialscan as hps
    >>> from hyperspy_partialscan.specimens import nanoparticle_field
    >>> s = hs.signals.Signal2D(nanoparticle_field((64, 64), seed=0))
    >>> s.metadata.General.title = "particles"
    >>> partial = hps.to_partial_scan(s, "random", 0.3, seed=0, show_progressbar=False)
    >>> done = hps.complete_partial_scan(partial, "linear", show_progressbar=False)
    >>> type(done).__name__, done.metadata.General.title, bool(np.isfinite(done.data).all())
    ('Signal2D', 'Completed particles (30 % random)', True)
    >>> done.metadata.Signal.Partial_scan.Completion.measured_rms_deviation
    0.0

    The same as a method, with the shipped generator, letting it change the
    measured pixels too:

    >>> net = partial.complete_partial_scan(keep_measured=False, device="cpu", show_progressbar=False)
    >>> net.metadata.Signal.Partial_scan.Completion.method, net.data.shape
    ('generator', (64, 64))
    >>> bool(net.metadata.Signal.Partial_scan.Completion.measured_rms_deviation > 0)
    True

    With the per-pixel uncertainty (the shipped uncertainty model):

    >>> done, sigma = hps.complete_partial_scan(partial, uncertainty=True, device="cpu", show_progressbar=False)
    >>> sigma.metadata.General.title, bool((sigma.data > 0).all())
    ('Uncertainty (sigma) of completed particles (30 % random)', True)
    """
    import dask.array as da

    validate_signal2d(signal, "complete_partial_scan")
    if method not in COMPLETION_METHODS:
        raise ValueError(f"unknown completion method {method!r}; choose one of {', '.join(COMPLETION_METHODS)}")
    lazy_output = check_laziness(signal, inplace, lazy_output)
    frame_shape = signal.axes_manager.signal_shape[::-1]
    if method == "biharmonic" and frame_shape[0] * frame_shape[1] > BIHARMONIC_MAX_PIXELS:
        raise ValueError(
            f"biharmonic inpainting is limited to {BIHARMONIC_MAX_PIXELS} pixels per frame; these frames are "
            f"{frame_shape[0]}x{frame_shape[1]}. Use method='linear' or 'generator'."
        )
    check_method_arguments(method, generator={"model": model, "network_batch_size": network_batch_size})
    check_number("navigation_chunks", navigation_chunks, low=1, integer=True, allow_none=True)
    if uncertainty and method != "generator":
        raise ValueError(f"uncertainty=True needs method='generator': the {method!r} interpolation has no calibrated "
                         "error estimate (the trained uncertainty network predicts the generator's error)")
    if uncertainty_model is not None and not uncertainty:
        raise ValueError("uncertainty_model= is only used with uncertainty=True")
    if uncertainty and not keep_measured:
        raise ValueError("uncertainty=True needs keep_measured=True: sigma is predicted and calibrated for "
                         "completions that keep the measured samples")
    data = signal.data
    if not signal._lazy:
        warn_float32_precision(data, "complete_partial_scan")
        check_partial_frames(data)
    provenance = {"method": method, "keep_measured": bool(keep_measured), "package_version": __version__}
    if method == "generator":
        check_number("tile_size", tile_size, low=16, integer=True)
        plan = plan_network(model, "completion", device, precision, network_batch_size)
        unc = _plan_uncertainty(signal, plan, uncertainty_model) if uncertainty else None
        func = GeneratorCompleter(plan, keep_measured, tile=tile_size, uncertainty=unc)
        provenance.update(plan.provenance())
        if unc is not None:
            provenance["uncertainty"] = _uncertainty_record(unc)
        token = (method, plan, keep_measured, tile_size, unc)
        batch = plan.batch_size
    else:
        func = FrameFunction(functools.partial(complete_frame, method=method), check_frame, f"{method} completion",
                             _keep if keep_measured else None)
        token = (method, keep_measured)
        batch = None
    chunks = navigation_chunks or default_navigation_chunks(frame_shape, batch)
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    result = map_frames(data, func, batch_size=chunks, name=f"complete-{method}", token=token, with_indices=True,
                        channels=2 if uncertainty else None)
    parts = [result[..., 0, :, :], result[..., 1, :, :]] if uncertainty else [result]
    variance = variance_model(signal)
    if lazy_output:
        provenance["measured_rms_deviation"] = LAZY_NOTE
        if variance is not None:
            provenance["measured_rms_deviation_over_noise"] = LAZY_NOTE
    else:
        # one pass over the data gives every part (and reads a lazy input once)
        measured = data.astype(np.float32)  # as the output (float32), so kept samples deviate by exactly 0
        lazy_input = isinstance(data, da.Array)
        arrays = parts + ([measured] if lazy_input else [])
        computed = compute(*arrays, show_progressbar=show_progressbar)
        computed = computed if len(arrays) > 1 else (computed,)
        parts = list(computed[: len(parts)])
        provenance.update(measured_deviation(parts[0], computed[-1] if lazy_input else measured, variance))
    title = signal.metadata.General.title
    out = deliver(
        signal, parts[0], lazy_output=lazy_output, show_progressbar=show_progressbar, inplace=inplace,
        title=f"Completed {title}".rstrip(), record_path="Signal.Partial_scan.Completion",
        record=provenance, signal_type="", validate=lambda: check_partial_frames(data),
    )
    if not uncertainty:
        return out
    sigma = signal_like(signal, parts[1], signal_type="", title=f"Uncertainty (sigma) of completed {title}".rstrip(),
                        keep_noise_model=False)
    sigma.metadata.set_item("Signal.Partial_scan.Completion", provenance)
    sigma.metadata.set_item("Signal.quantity", f"sigma of the completion's error ({MEANING.split(',')[0]})")
    return out, sigma


def _plan_uncertainty(signal, plan, model):
    """The uncertainty spec of a generator run on ``signal`` (path family from the simulation record)."""
    from .uncertainty import plan_uncertainty

    record = signal.metadata.get_item("Signal.Partial_scan")
    path = record.get_item("path") if record is not None and record.get_item("source") == "simulated" else None
    return plan_uncertainty(plan, model, path, signal)


def _uncertainty_record(unc):
    cal = unc.calibration or {}
    return {"model": unc.plan.name, "model_sha256": unc.plan.sha256, "meaning": MEANING,
            "noise_level": {"variance model": "HyperSpy's variance model in the metadata",
                            "simulation": "the simulated noise recorded by to_partial_scan",
                            "estimated": "estimated blindly from neighbouring samples"}[unc.noise_kind],
            "calibration": {"method": cal.get("method", "none (uncalibrated model)"),
                            "scales_by_coverage": (cal.get("scales") or {}).get(unc.path) or cal.get("global", 1.0),
                            "path_family": unc.path or "unknown (global scale)"}}


def measured_deviation(output: np.ndarray, measured: np.ndarray, variance: dict | None = None) -> dict:
    """RMS difference between ``output`` and ``measured`` at the finite pixels of ``measured``.

    Parameters
    ----------
    output, measured : numpy.ndarray
        Same shape; NaN in ``measured`` = unsampled (ignored).
    variance : dict, optional
        ``gain_factor`` and ``gain_offset`` of HyperSpy's linear variance model.

    Returns
    -------
    dict
        ``measured_rms_deviation`` (data units) and, with ``variance``,
        ``measured_rms_deviation_over_noise`` (the RMS of the difference over
        sqrt(gain_factor * max(measured, 0) + gain_offset), over pixels where
        that variance is positive).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.completion import measured_deviation
    >>> measured_deviation(np.array([1.0, 2.0, 5.0]), np.array([1.0, 4.0, np.nan]), {"gain_factor": 1.0,
    ...                                                                                 "gain_offset": 0.0})
    {'measured_rms_deviation': 1.4142135623730951, 'measured_rms_deviation_over_noise': 0.7071067811865476}
    """
    sampled = np.isfinite(measured)
    m = np.asarray(measured, np.float64)[sampled]
    d = np.asarray(output, np.float64)[sampled] - m
    out = {"measured_rms_deviation": float(np.sqrt(np.mean(d * d))) if d.size else 0.0}
    if variance is not None:
        var = variance["gain_factor"] * np.maximum(m, 0) + variance["gain_offset"]
        ok = var > 0
        z = d[ok] / np.sqrt(var[ok])
        out["measured_rms_deviation_over_noise"] = float(np.sqrt(np.mean(z * z))) if z.size else float("nan")
    return out
