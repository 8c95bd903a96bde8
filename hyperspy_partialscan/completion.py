"""Signal-level completion of partial scans: classical methods and the trained generator."""

from __future__ import annotations

import numpy as np

from ._version import __version__
from ._signal_tools import deliver, check_laziness, validate_signal2d
from ._validation import check_number
from .engine import FrameNetwork, check_finite_output, map_frames, plan_network
from .inpainting import BIHARMONIC_MAX_PIXELS, CLASSICAL_METHODS, check_frame, complete_frame

__all__ = ["complete_partial_scan", "COMPLETION_METHODS", "ClassicalCompleter", "GeneratorCompleter",
           "check_partial_frames", "default_navigation_chunks"]

COMPLETION_METHODS = ("generator",) + tuple(CLASSICAL_METHODS)

#: default working tile of the generator: larger frames go through overlapping tiles
GENERATOR_TILE = 512
GENERATOR_OVERLAP = 64


class ClassicalCompleter:
    """Picklable batch function for a classical method."""

    def __init__(self, method, keep_measured):
        self.method, self.keep_measured = method, keep_measured

    def __call__(self, frames, indices):
        out = np.empty(frames.shape, np.float32)
        for k, (f, i) in enumerate(zip(frames, indices)):
            check_frame(f, int(i))
            out[k] = complete_frame(f, self.method)
        check_finite_output(out, indices, f"{self.method} completion")
        return _keep(frames, out) if self.keep_measured else out


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
    """

    task = "completion"

    def __init__(self, plan, keep_measured=True, tile=GENERATOR_TILE, overlap=GENERATOR_OVERLAP):
        super().__init__(plan, tile=tile, overlap=overlap)
        self.keep_measured = keep_measured

    def check(self, frame, index):
        check_frame(frame, index)

    def prepare(self, frames):
        from .models.features import completion_inputs

        return completion_inputs(frames)

    def run(self, network, device, tiles, tile_scales):
        from .models.inference import run_network, to_intensity_scale

        return to_intensity_scale(run_network(network, tiles, device, self.plan.precision), tile_scales)

    def finish(self, frames, out):
        return _keep(frames, out) if self.keep_measured else out


def default_navigation_chunks(method, frame_shape, network_batch_size=1):
    """Frames per dask block: about 8 (generator) or 16 (classical) frames of 512x512, at least one network batch.

    Examples
    --------
    >>> from hyperspy_partialscan.completion import default_navigation_chunks
    >>> default_navigation_chunks("generator", (512, 512)), default_navigation_chunks("linear", (2048, 2048))
    (8, 1)
    """
    pixels = frame_shape[0] * frame_shape[1]
    if method == "generator":
        return max(1, network_batch_size, min(16, (8 * 512 * 512) // pixels))
    return max(1, min(32, (16 * 512 * 512) // pixels))


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
    sampled = da.isfinite(frames).sum(axis=(1, 2)) if isinstance(frames, da.Array) else np.isfinite(frames).sum(
        axis=(1, 2))
    sampled = np.asarray(sampled.compute() if isinstance(sampled, da.Array) else sampled)
    size = frames.shape[1] * frames.shape[2]
    for bad, what in ((sampled == 0, "no sampled pixel (all NaN)"),
                      (sampled == size, "no unsampled (NaN) pixel")):
        if bad.any():
            hint = "nothing can be completed there" if what.startswith("no sampled") else (
                "nothing to complete (a full scan is not a partial scan; a dense acquisition with zeros at the "
                "unscanned positions needs as_partial_scan(signal, mask=... or unscanned_value=...) first)")
            raise ValueError(f"{int(bad.sum())} frame(s) have {what}, first at flat navigation index "
                             f"{int(np.flatnonzero(bad)[0])}: {hint}")


def complete_partial_scan(
    signal,
    method="generator",
    *,
    model=None,
    navigation_chunks=None,
    network_batch_size=None,
    device=None,
    precision=None,
    keep_measured=True,
    tile_size=GENERATOR_TILE,
    inplace=False,
    lazy_output=None,
    show_progressbar=None,
):
    """Complete partial scans: fill every unsampled (NaN) pixel.

    Parameters
    ----------
    signal : hyperspy.signals.Signal2D
        Partial scan(s), NaN = unsampled; lazy or not, any navigation shape.
        (Dense acquisitions with zeros at unscanned pixels: convert them with
        :func:`as_partial_scan` first.)
    method : str
        ``"generator"`` (trained network, default), ``"nearest"``,
        ``"linear"``, ``"cubic"`` or ``"biharmonic"``.
    model : str or pathlib.Path, optional
        Generator model name or path (default: the shipped default model).
    batch_size : int, optional
        Frames per block/batch (default: ~8 frames of 512x512 for the generator).
    device : str, optional
        Torch device for the generator (default: CUDA, then MPS, then CPU).
    precision : {None, "bfloat16", "float16"}, optional
        Reduced-precision inference (GPU).
    keep_measured : bool
        Put the measured samples back into the completion.
    tile_size : int
        Frames larger than this go through overlapping, blended tiles (generator).
    inplace : bool
        Replace the signal's data and return None.
    lazy_output : bool, optional
        Default: as the input. Cannot differ from the input with ``inplace``.
    show_progressbar : bool, optional
        Default: HyperSpy's preference.

    Returns
    -------
    PartialScan2D or LazyPartialScan2D or None
        Completed signal titled ``"Completed <title>"``, with the provenance in
        ``metadata.Signal.Partial_scan.Completion``; the axes, metadata and
        original_metadata of the input (``metadata.Signal.Noise_properties``
        without its data-sized ``variance``, which no longer matches).

    Raises
    ------
    ValueError
        Unknown method, a frame with no sample at all, a frame too large for
        biharmonic inpainting, or inplace with a change of laziness.
    """
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
    if method != "generator" and (model is not None or network_batch_size is not None):
        raise ValueError(f"model= and network_batch_size= are only used by method='generator', not {method!r}")
    data = signal.data
    if not signal._lazy:
        check_partial_frames(data)
    provenance = {"method": method, "keep_measured": bool(keep_measured), "package_version": __version__}
    if method == "generator":
        plan = plan_network(model, "completion", device, precision, network_batch_size)
        check_number("tile_size", tile_size, low=16, integer=True)
        func = GeneratorCompleter(plan, keep_measured, tile=tile_size)
        provenance.update(plan.provenance())
        token = (method, plan, keep_measured, tile_size)
    else:
        func = ClassicalCompleter(method, keep_measured)
        token = (method, keep_measured)
    chunks = navigation_chunks or default_navigation_chunks(method, frame_shape, getattr(func, "plan", None) and
                                                            func.plan.batch_size or 1)
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    result = map_frames(data, func, batch_size=chunks, name=f"complete-{method}", token=token, with_indices=True)
    return deliver(
        signal, result, lazy_output=lazy_output, show_progressbar=show_progressbar, inplace=inplace,
        title=f"Completed {signal.metadata.General.title}".rstrip(), record_path="Signal.Partial_scan.Completion",
        record=provenance, signal_type="", validate=lambda: check_partial_frames(data),
    )
