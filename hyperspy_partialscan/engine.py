"""The frame-batch engine shared by simulation, completion and denoising.

:func:`map_frames` applies a batched function to every 2-D frame of an array
with any number of leading (navigation) dimensions. Input may be numpy or dask;
the navigation dimensions are rechunked into blocks of about ``batch_size``
whole frames and the function is called once per block (never once per frame)
through :func:`dask.array.map_blocks` with a deterministic task name. Nothing is
computed here: the caller decides (lazy output, or compute with a progress bar),
so the same graph runs on the threaded scheduler or a ``dask.distributed``
cluster.

:class:`Tiler` splits frames larger than a working tile into overlapping tiles
and blends them back with smooth (raised-cosine) weights, so a network sees
bounded memory whatever the frame size and the result has no seams.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["map_frames", "navigation_chunks", "default_navigation_chunks", "Tiler", "compute", "progressbar_wanted",
           "FrameFunction", "NetworkPlan", "plan_network", "worker_network", "FrameNetwork", "check_finite_output"]


def navigation_chunks(shape, batch_size):
    """Chunk sizes for the navigation dimensions so a block holds ~``batch_size`` frames.

    Fills the fastest (last) navigation dimension first.

    Parameters
    ----------
    shape : tuple of int
        Array shape ``nav + (H, W)``.
    batch_size : int
        Wanted number of frames per block (at least 1 is used).

    Returns
    -------
    tuple of int
        One chunk size per dimension; frames are never split.
    """
    nav = list(shape[:-2])
    chunks = []
    remaining = max(int(batch_size), 1)
    for n in reversed(nav):
        c = max(1, min(n, remaining))
        chunks.append(c)
        remaining = max(1, remaining // n) if c == n else 1
    return tuple(reversed(chunks)) + (shape[-2], shape[-1])


def default_navigation_chunks(frame_shape, network_batch_size=None):
    """Frames per dask block when the user gives none: the package's one rule.

    About 8 frames of 512x512 for a network (at most 16, at least one network
    batch), about 16 frames of 512x512 otherwise (at most 32); one frame at
    least.

    Parameters
    ----------
    frame_shape : tuple of int
        (H, W) of a frame.
    network_batch_size : int, optional
        Frames per network call, for a network; None for a classical method.

    Examples
    --------
    >>> from hyperspy_partialscan.engine import default_navigation_chunks
    >>> default_navigation_chunks((512, 512), 2), default_navigation_chunks((2048, 2048))
    (8, 1)
    >>> default_navigation_chunks((64, 64), 4), default_navigation_chunks((256, 256))
    (16, 32)
    """
    pixels = frame_shape[0] * frame_shape[1]
    if network_batch_size is not None:
        return max(1, network_batch_size, min(16, (8 * 512 * 512) // pixels))
    return max(1, min(32, (16 * 512 * 512) // pixels))


def _block_indices(block_info, nav_shape):
    """Flat navigation indices of the frames of a block (C order)."""
    loc = block_info[0]["array-location"][: len(nav_shape)]
    grids = np.meshgrid(*[np.arange(a, b) for a, b in loc], indexing="ij")
    return np.ravel_multi_index([g.ravel() for g in grids], nav_shape) if nav_shape else np.zeros(1, int)


class _Block:
    """Picklable block function: reshape the block to (n, H, W), call, reshape back."""

    def __init__(self, func, nav_shape, dtype, with_indices, channels=None):
        self.func, self.nav_shape, self.dtype, self.with_indices = func, nav_shape, dtype, with_indices
        self.channels = channels

    def __call__(self, block, block_info=None):
        frames = np.asarray(block).reshape((-1,) + block.shape[-2:])
        if self.with_indices:
            idx = _block_indices(block_info, self.nav_shape)
            out = self.func(frames, idx)
        else:
            out = self.func(frames)
        shape = block.shape if self.channels is None else block.shape[:-2] + (self.channels,) + block.shape[-2:]
        return np.asarray(out, dtype=self.dtype).reshape(shape)


def map_frames(data, func, *, batch_size=16, name="partialscan", token=None, dtype=np.float32, with_indices=False,
               channels=None):
    """Lazily apply ``func`` to batches of frames.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        Shape ``nav + (H, W)``.
    func : callable
        ``func(frames)`` or, with ``with_indices``, ``func(frames, indices)``
        where ``frames`` is (n, H, W) and ``indices`` the flat (C-order)
        navigation indices of those frames; returns (n, H, W).
    batch_size : int
        Approximate number of frames per block.
    name : str
        Prefix of the dask task names.
    token : object
        Everything besides the data that determines the result (method,
        parameters, model hash); hashed into the deterministic task name.
    dtype : numpy dtype
        Output dtype.
    channels : int, optional
        ``func`` returns (n, channels, H, W): several results per frame from
        one pass over the data (e.g. a completion and its uncertainty); the
        output then has shape ``nav + (channels, H, W)``.

    Returns
    -------
    dask.array.Array
    """
    import dask.array as da
    from dask.base import tokenize

    chunks = navigation_chunks(data.shape, batch_size)
    if isinstance(data, da.Array):
        arr = data.rechunk(chunks)
    else:
        arr = da.from_array(data, chunks=chunks)
    block = _Block(func, data.shape[:-2], np.dtype(dtype), with_indices, channels)
    extra = {}
    if channels is not None:
        extra = {"new_axis": [arr.ndim - 2], "chunks": arr.chunks[:-2] + ((channels,),) + arr.chunks[-2:]}
    return da.map_blocks(
        block,
        arr,
        dtype=np.dtype(dtype),
        name=f"{name}-{tokenize(arr.name, token, batch_size, str(np.dtype(dtype)), channels)}",
        meta=np.empty((0,) * (arr.ndim + (channels is not None)), dtype=dtype),
        **extra,
    )


def progressbar_wanted(show_progressbar):
    """``show_progressbar`` resolved as HyperSpy does: None means HyperSpy's preference.

    Examples
    --------
    >>> from hyperspy_partialscan.engine import progressbar_wanted
    >>> progressbar_wanted(False), progressbar_wanted(1)
    (False, True)
    """
    if show_progressbar is None:
        from hyperspy.api import preferences

        return bool(preferences.General.show_progressbar)
    return bool(show_progressbar)


def compute(*arrays, show_progressbar=None):
    """Compute dask arrays together (shared tasks run once), with a progress bar if wanted.

    Returns the computed array, or a tuple for several. ``show_progressbar``
    defaults to HyperSpy's preference.
    """
    import dask

    with contextlib.ExitStack() as stack:
        if progressbar_wanted(show_progressbar):
            from dask.diagnostics import ProgressBar

            stack.enter_context(ProgressBar())
        out = dask.compute(*arrays)
    return out[0] if len(arrays) == 1 else out


class Tiler:
    """Overlapping tiles of a frame and their smooth blending.

    Parameters
    ----------
    tile : int
        Tile side in pixels. Frames no larger than this in both directions are
        processed whole.
    overlap : int
        Overlap between neighbouring tiles, in pixels; the blending weights ramp
        over this width.
    """

    def __init__(self, tile=512, overlap=64):
        if int(tile) != tile or tile < 1:
            raise ValueError(f"tile must be a positive integer number of pixels, got {tile!r}")
        if int(overlap) != overlap or overlap < 0:
            raise ValueError(f"tile overlap must be a non-negative integer number of pixels, got {overlap!r}")
        if overlap * 2 >= tile:
            raise ValueError(f"tile overlap ({overlap}) must be less than half the tile size ({tile})")
        self.tile, self.overlap = int(tile), int(overlap)

    def _starts(self, n):
        if n <= self.tile:
            return [0]
        step = self.tile - self.overlap
        starts = list(range(0, n - self.tile, step)) + [n - self.tile]
        return sorted(set(starts))

    def windows(self, shape):
        """(top, left, height, width) of each tile covering ``shape``."""
        h, w = shape
        return [
            (r, c, min(self.tile, h), min(self.tile, w)) for r in self._starts(h) for c in self._starts(w)
        ]

    def _weight(self, shape, window):
        top, left, th, tw = window
        wy = self._ramp(th, top > 0, top + th < shape[0])
        wx = self._ramp(tw, left > 0, left + tw < shape[1])
        return np.outer(wy, wx)

    def _ramp(self, n, ramp_start, ramp_end):
        w = np.ones(n)
        k = self.overlap
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
        if ramp_start:
            w[:k] = np.minimum(w[:k], ramp)
        if ramp_end:
            w[n - k :] = np.minimum(w[n - k :], ramp[::-1])
        return w

    def split(self, frame):
        """List of tiles (views) of a frame; its last two axes are the image axes (channels may lead)."""
        return [frame[..., r : r + h, c : c + w] for r, c, h, w in self.windows(frame.shape[-2:])]

    def merge(self, tiles, shape):
        """Blend processed tiles (h, w) or (channels, h, w) back into a frame of ``shape`` (leading channels kept)."""
        lead = np.shape(tiles[0])[:-2]
        out = np.zeros(lead + tuple(shape), np.float64)
        wsum = np.zeros(shape, np.float64)
        for t, win in zip(tiles, self.windows(shape)):
            r, c, h, w = win
            wt = self._weight(shape, win)
            out[..., r : r + h, c : c + w] += wt * t
            wsum[r : r + h, c : c + w] += wt
        return (out / wsum).astype(np.float32)

    def apply(self, frames, func, batch_size=None, scales=None):
        """Process (n, H, W) frames through ``func(tiles, tile_scales)`` on tiles.

        ``func`` receives a stack of equally sized tiles (n_tiles, ..., th, tw)
        (leading channel axes are tiled along) and the normalisation (offset,
        scale) of each tile's parent frame, and returns (n_tiles, th, tw). Tiles
        of all frames are batched together, ``batch_size`` tiles at a time.
        """
        shape = frames.shape[-2:]
        tiles, tile_scales = [], []
        for i, f in enumerate(frames):
            ts = self.split(f)
            tiles += ts
            tile_scales += [None if scales is None else scales[i]] * len(ts)
        tiles = np.stack(tiles)
        bs = batch_size or len(tiles)
        out = np.concatenate([func(tiles[i : i + bs], tile_scales[i : i + bs]) for i in range(0, len(tiles), bs)])
        per = len(self.windows(shape))
        return np.stack([self.merge(out[i * per : (i + 1) * per], shape) for i in range(len(frames))])

    def process(self, frames, func, batch_size=None, scales=None):
        """Like :meth:`apply`, but frames that fit in one tile go through whole.

        Whole frames are still passed ``batch_size`` at a time, which bounds a
        network's activation memory whatever the dask block size.
        """
        if max(frames.shape[-2:]) > self.tile:
            return self.apply(frames, func, batch_size=batch_size, scales=scales)
        bs = batch_size or len(frames)
        return np.concatenate([func(frames[i : i + bs], None if scales is None else scales[i : i + bs])
                               for i in range(0, len(frames), bs)])


class FrameFunction:
    """Picklable batch function applying a per-frame function (a classical method) to every frame of a block.

    Parameters
    ----------
    func : callable
        ``func(frame) -> frame``, picklable (e.g. a :func:`functools.partial`
        of a module-level function).
    check : callable
        ``check(frame, index)`` raises a clear error for a frame ``func`` cannot process.
    what : str
        The method, for the messages.
    finish : callable, optional
        ``finish(frames, out) -> out`` after the frames are processed.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.engine import FrameFunction
    >>> double = FrameFunction(np.negative, lambda f, i: None, "negation")
    >>> double(np.ones((2, 2, 2)), [0, 1])[1, 0, 0]
    np.float32(-1.0)
    """

    def __init__(self, func, check, what, finish=None):
        self.func, self.check, self.what, self.finish = func, check, what, finish

    def __call__(self, frames, indices):
        out = np.empty(frames.shape, np.float32)
        for k, (f, i) in enumerate(zip(frames, indices, strict=True)):
            self.check(f, int(i))
            out[k] = self.func(f)
        check_finite_output(out, indices, self.what)
        return out if self.finish is None else self.finish(frames, out)


@dataclass(frozen=True)
class NetworkPlan:
    """A network resolved once, before any dask graph is built (see :func:`plan_network`).

    Attributes
    ----------
    path : str
        Weights file, loaded where the blocks run.
    sha256 : str
        Its hash: a worker refuses a file that changed after planning.
    name : str
        Model name, for provenance.
    device : str
        Torch device the blocks run on.
    precision : str or None
        Reduced inference precision (``"bfloat16"``, ``"float16"``) or None.
    batch_size : int
        Frames (or tiles) per network call.
    """

    path: str
    sha256: str
    name: str
    device: str
    precision: str | None
    batch_size: int

    def provenance(self):
        """The plan as recorded in an output's metadata."""
        return {"model": self.name, "model_sha256": self.sha256, "device": self.device,
                "precision": self.precision or "float32", "network_batch_size": self.batch_size}


def plan_network(model, task, device=None, precision=None, batch_size=None):
    """Resolve and check the model, device, precision and network batch size of a network run.

    Everything is validated here, eagerly, so a mistake raises before a lazy
    result is returned rather than inside a dask task later.

    Parameters
    ----------
    model : str or pathlib.Path or Model or None
        Model name or path; None: the task's default model.
    task : {"completion", "denoising"}
    device : str, optional
        Torch device (default: CUDA, then MPS, then the CPU).
    precision : {None, "float32", "bfloat16", "float16"}
    batch_size : int, optional
        Frames or tiles per network call; default: :func:`~.device.default_network_batch`.

    Returns
    -------
    NetworkPlan
    """
    from ._validation import check_number
    from .device import check_precision, default_network_batch, select_device
    from .models import load_model

    precision = check_precision(precision)
    dev = select_device(device)
    if batch_size is None:
        batch_size = default_network_batch(dev, task)
    batch_size = check_number("network_batch_size", batch_size, low=1, integer=True)
    m = load_model(model, task=task)
    return NetworkPlan(str(m.path), m.sha256, m.name, str(dev), precision, batch_size)


#: networks loaded in this process, by (weights path, sha256, device): a worker loads (and hashes) each once
_NETWORKS: dict = {}
_NETWORKS_LOCK = threading.Lock()


def worker_network(plan, task):
    """The plan's network on its device, loaded once per process (per worker).

    The one place a planned network is loaded: the frame engine's blocks, the
    uncertainty network and the adaptive planners all take it from here, so a
    process loads (and hashes) each weights file once.
    """
    import torch

    from .models import load_model

    key = (plan.path, plan.sha256, plan.device)
    with _NETWORKS_LOCK:
        network = _NETWORKS.get(key)
        if network is None:
            model = load_model(plan.path, task=task)
            if model.sha256 != plan.sha256:
                raise RuntimeError(f"the model file {plan.path} changed after the computation was planned")
            network = model.on(torch.device(plan.device))
            _NETWORKS[key] = network
    return network


class FrameNetwork:
    """Picklable batch function running a trained network over frames.

    The network is described by a :class:`NetworkPlan` (resolved once by
    :func:`plan_network`) and loaded where the block runs, once per process,
    so a graph can be shipped to ``dask.distributed`` workers. Frames larger
    than ``tile`` go through overlapping, blended tiles; ``plan.batch_size``
    frames (or tiles) go through the network at a time. An output that is not
    finite everywhere raises instead of being returned.

    Subclasses set :attr:`task` and implement :meth:`check` and :meth:`run`;
    :meth:`prepare` and :meth:`finish` are optional hooks.
    """

    task = None

    def __init__(self, plan, *, tile=512, overlap=64):
        self.plan = plan
        self.tiler = Tiler(tile, min(overlap, tile // 4))

    def check(self, frame, index):
        """Raise a clear error for a frame the network cannot process."""
        raise NotImplementedError

    def prepare(self, frames, indices=None):
        """What is tiled and passed to :meth:`run`, and each frame's normalisation (None: per tile).

        The default passes the frames themselves. A subclass may build
        per-frame inputs from the whole frame here (e.g. interpolations that
        need the frame's context), shape (n, channels, H, W), and per-frame
        terms (the second value, passed to :meth:`run` once per tile).
        ``indices``: the frames' flat navigation indices (None: 0, 1, ...).
        """
        return frames, None

    def run(self, network, device, tiles, tile_scales):
        """Process a stack of equally sized tiles or frames (n, h, w)."""
        raise NotImplementedError

    def finish(self, frames, out):
        """Post-process the assembled output of a block."""
        return out

    def __call__(self, frames, indices=None):
        import torch

        frames = np.asarray(frames, np.float32)
        for k, f in enumerate(frames):  # cheap checks before the network is loaded
            self.check(f, int(indices[k]) if indices is not None else k)
        network = worker_network(self.plan, self.task)
        device = torch.device(self.plan.device)

        def run(tiles, tile_scales):
            return self.run(network, device, tiles, tile_scales)

        inputs, scales = self.prepare(frames, indices)
        out = self.tiler.process(inputs, run, batch_size=self.plan.batch_size, scales=scales)
        out = self.finish(frames, out).astype(np.float32, copy=False)
        check_finite_output(out, indices, f"the {self.task} network ({self.plan.name})")
        return out


def check_finite_output(out, indices, what):
    """Raise if a block's output is not finite everywhere (e.g. a diverged network).

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.engine import check_finite_output
    >>> check_finite_output(np.zeros((1, 2, 2)), [0], "linear")
    >>> check_finite_output(np.full((1, 2, 2), np.nan), [3], "linear")
    Traceback (most recent call last):
    ...
    FloatingPointError: linear gave non-finite values in 1 frame(s), first at flat navigation index 3; ...
    """
    bad = ~np.isfinite(out).reshape(len(out), -1).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        index = int(indices[first]) if indices is not None else first
        raise FloatingPointError(f"{what} gave non-finite values in {int(bad.sum())} frame(s), first at flat "
                                 f"navigation index {index}; nothing was returned (is the model diverged?)")
