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

import numpy as np

__all__ = ["map_frames", "navigation_chunks", "Tiler", "compute", "FrameNetwork"]


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


def _block_indices(block_info, nav_shape):
    """Flat navigation indices of the frames of a block (C order)."""
    loc = block_info[0]["array-location"][: len(nav_shape)]
    grids = np.meshgrid(*[np.arange(a, b) for a, b in loc], indexing="ij")
    return np.ravel_multi_index([g.ravel() for g in grids], nav_shape) if nav_shape else np.zeros(1, int)


class _Block:
    """Picklable block function: reshape the block to (n, H, W), call, reshape back."""

    def __init__(self, func, nav_shape, dtype, with_indices):
        self.func, self.nav_shape, self.dtype, self.with_indices = func, nav_shape, dtype, with_indices

    def __call__(self, block, block_info=None):
        frames = np.asarray(block).reshape((-1,) + block.shape[-2:])
        if self.with_indices:
            idx = _block_indices(block_info, self.nav_shape)
            out = self.func(frames, idx)
        else:
            out = self.func(frames)
        return np.asarray(out, dtype=self.dtype).reshape(block.shape)


def map_frames(data, func, *, batch_size=16, name="partialscan", token=None, dtype=np.float32, with_indices=False):
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
    block = _Block(func, data.shape[:-2], np.dtype(dtype), with_indices)
    return da.map_blocks(
        block,
        arr,
        dtype=np.dtype(dtype),
        name=f"{name}-{tokenize(arr.name, token, batch_size, str(np.dtype(dtype)))}",
        meta=np.empty((0,) * arr.ndim, dtype=dtype),
    )


def compute(array, show_progressbar=None):
    """Compute a dask array, with a progress bar if wanted (HyperSpy's preference by default)."""
    if show_progressbar is None:
        from hyperspy.defaults_parser import preferences

        show_progressbar = preferences.General.show_progressbar
    if show_progressbar:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return array.compute()
    return array.compute()


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
        """List of tiles (views) of a 2-D frame."""
        return [frame[r : r + h, c : c + w] for r, c, h, w in self.windows(frame.shape)]

    def merge(self, tiles, shape):
        """Blend processed tiles back into a frame of ``shape``."""
        out = np.zeros(shape, np.float64)
        wsum = np.zeros(shape, np.float64)
        for t, win in zip(tiles, self.windows(shape)):
            r, c, h, w = win
            wt = self._weight(shape, win)
            out[r : r + h, c : c + w] += wt * t
            wsum[r : r + h, c : c + w] += wt
        return (out / wsum).astype(np.float32)

    def apply(self, frames, func, batch_size=None, scales=None):
        """Process (n, H, W) frames through ``func(tiles, tile_scales)`` on tiles.

        ``func`` receives a stack of equally sized tiles (n_tiles, th, tw) and
        the normalisation (offset, scale) of each tile's parent frame. Tiles of
        all frames are batched together, ``batch_size`` tiles at a time.
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
        return np.concatenate(
            [func(frames[i : i + bs], None if scales is None else scales[i : i + bs]) for i in range(0, len(frames), bs)]
        )


class FrameNetwork:
    """Picklable batch function running a trained network over frames.

    The model is referenced by name or path and loaded where the block runs
    (once per process, from the thread-safe cache of
    :func:`hyperspy_partialscan.load_model`), so a graph can be shipped to
    ``dask.distributed`` workers. Frames larger than ``tile`` go through
    overlapping, blended tiles; ``tile_batch`` frames (or tiles) run at a time.

    Subclasses set :attr:`task` and implement :meth:`check` and :meth:`run`;
    :meth:`scales` and :meth:`finish` are optional hooks.
    """

    task = None

    def __init__(self, model_ref, device=None, precision=None, *, tile=512, overlap=64, tile_batch=2):
        self.model_ref, self.device, self.precision = model_ref, device, precision
        self.tiler = Tiler(tile, min(overlap, tile // 4))
        self.tile_batch = tile_batch

    def check(self, frame, index):
        """Raise a clear error for a frame the network cannot process."""
        raise NotImplementedError

    def scales(self, frames):
        """Per-frame normalisation shared by all tiles of a frame (None: per tile)."""
        return None

    def run(self, network, device, tiles, tile_scales):
        """Process a stack of equally sized tiles or frames (n, h, w)."""
        raise NotImplementedError

    def finish(self, frames, out):
        """Post-process the assembled output of a block."""
        return out

    def __call__(self, frames, indices=None):
        from .device import select_device
        from .models import load_model

        model = load_model(self.model_ref, task=self.task)
        device = select_device(self.device)
        network = model.on(device)
        frames = np.asarray(frames, np.float32)
        for k, f in enumerate(frames):
            self.check(f, int(indices[k]) if indices is not None else k)

        def run(tiles, tile_scales):
            return self.run(network, device, tiles, tile_scales)

        out = self.tiler.process(frames, run, batch_size=self.tile_batch, scales=self.scales(frames))
        return self.finish(frames, out).astype(np.float32, copy=False)
