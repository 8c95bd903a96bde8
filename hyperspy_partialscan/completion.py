"""Signal-level completion of partial scans: classical methods and the trained generator."""

from __future__ import annotations

import numpy as np

from ._version import __version__
from ._signal_tools import deliver, check_laziness, validate_signal2d
from .engine import FrameNetwork, map_frames
from .inpainting import CLASSICAL_METHODS, check_frame, complete_frame

__all__ = ["complete_partial_scan", "COMPLETION_METHODS", "ClassicalCompleter", "GeneratorCompleter"]

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
        return _keep(frames, out) if self.keep_measured else out


def _keep(frames, out):
    sampled = np.isfinite(frames)
    out[sampled] = frames[sampled]
    return out


class GeneratorCompleter(FrameNetwork):
    """Picklable batch function running the completion network (see :class:`~.engine.FrameNetwork`).

    Each frame is normalised once from its sampled values, so all its tiles
    share one intensity scale.
    """

    task = "completion"

    def __init__(self, model_ref, device=None, precision=None, keep_measured=False, tile=GENERATOR_TILE,
                 overlap=GENERATOR_OVERLAP, tile_batch=2):
        super().__init__(model_ref, device, precision, tile=tile, overlap=overlap, tile_batch=tile_batch)
        self.keep_measured = keep_measured

    def check(self, frame, index):
        check_frame(frame, index)

    def scales(self, frames):
        from .models.features import frame_scale

        return [frame_scale(f) for f in frames]

    def run(self, network, device, tiles, tile_scales):
        from .models.inference import complete_batch

        return complete_batch(network, tiles, device, self.precision, scales=tile_scales)

    def finish(self, frames, out):
        return _keep(frames, out) if self.keep_measured else out


def _default_batch(method, frame_shape):
    pixels = frame_shape[0] * frame_shape[1]
    if method == "generator":
        return max(1, min(16, (8 * 512 * 512) // pixels))
    return max(1, min(32, (16 * 512 * 512) // pixels))


def complete_partial_scan(
    signal,
    method="generator",
    *,
    model=None,
    batch_size=None,
    device=None,
    precision=None,
    keep_measured=False,
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
    if method == "biharmonic":
        from .inpainting import BIHARMONIC_MAX_PIXELS

        if frame_shape[0] * frame_shape[1] > BIHARMONIC_MAX_PIXELS:
            raise ValueError(
                f"biharmonic inpainting is limited to {BIHARMONIC_MAX_PIXELS} pixels per frame; these frames are "
                f"{frame_shape[0]}x{frame_shape[1]}. Use method='linear' or 'generator'."
            )
    data = signal.data
    if not signal._lazy:
        empty = ~np.isfinite(data).reshape((-1,) + tuple(frame_shape)).any(axis=(1, 2))
        if empty.any():
            raise ValueError(
                f"{int(empty.sum())} frame(s) have no sampled pixel (all NaN), first at flat navigation index "
                f"{int(np.flatnonzero(empty)[0])}; nothing can be completed there"
            )
    batch_size = batch_size or _default_batch(method, frame_shape)
    provenance = {"method": method, "keep_measured": bool(keep_measured), "package_version": __version__}
    if method == "generator":
        from .device import select_device
        from .models import load_model

        m = load_model(model, task="completion")
        dev = select_device(device)
        func = GeneratorCompleter(str(m.path), str(dev), precision, keep_measured, tile=tile_size)
        provenance.update(model=m.name, model_sha256=m.sha256, device=str(dev), precision=precision or "float32")
        token = (method, m.sha256, str(dev), precision, keep_measured, tile_size)
    else:
        if model is not None:
            raise ValueError(f"model= is only used by method='generator', not {method!r}")
        func = ClassicalCompleter(method, keep_measured)
        token = (method, keep_measured)
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    result = map_frames(data, func, batch_size=batch_size, name=f"complete-{method}", token=token, with_indices=True)
    return deliver(
        signal, result, lazy_output=lazy_output, show_progressbar=show_progressbar, inplace=inplace,
        title=f"Completed {signal.metadata.General.title}".rstrip(), record_path="Signal.Partial_scan.Completion",
        record=provenance, signal_type="",
    )
