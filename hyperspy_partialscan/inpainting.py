"""Classical completion of partial scans (pure array functions).

A partial scan is a float frame whose unsampled pixels are NaN. Every function
here takes such a frame and returns a completed float32 frame without NaN.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict

import numpy as np
from scipy import interpolate, ndimage
from scipy.spatial import Delaunay, QhullError
from threadpoolctl import ThreadpoolController

__all__ = [
    "CLASSICAL_METHODS",
    "BIHARMONIC_MAX_PIXELS",
    "check_frame",
    "nearest_fill",
    "linear_fill",
    "cubic_fill",
    "biharmonic_fill",
    "complete_frame",
    "clear_triangulation_cache",
]

#: Largest frame (in pixels) that biharmonic inpainting accepts: it solves a
#: sparse linear system over all missing pixels, whose memory and time grow
#: quickly beyond this.
BIHARMONIC_MAX_PIXELS = 1024 * 1024


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None
_blas_controller = None  # scanning the loaded libraries costs ~3 ms: done once


@contextlib.contextmanager
def _single_blas_thread():
    """Limit BLAS to one thread while any thread of the process is inside this context.

    ``threadpool_limits`` sets a process-wide limit and restores the limits it
    found on exit; nested in several threads at once (dask runs blocks in
    parallel) a thread can save another thread's temporary limit and restore
    it last, leaving BLAS single-threaded for good. Here the first thread in
    sets the limit and the last one out restores the original.

    Yields
    ------
    None
    """
    global _blas_users, _blas_limiter, _blas_controller
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def check_frame(frame, index=None):
    """Raise ValueError if ``frame`` has no finite sample at all.

    Parameters
    ----------
    frame : numpy.ndarray
        2-D partial scan (NaN = unsampled).
    index : int, optional
        Flat navigation index of the frame, named in the message.

    Raises
    ------
    ValueError
        If every value of the frame is NaN (or infinite).
    """
    if not np.isfinite(frame).any():
        where = f" {index} (flat navigation index)" if index is not None else ""
        raise ValueError(
            f"partial scan frame{where} has no sampled pixel: every value is NaN; "
            "nothing can be completed"
        )


def nearest_fill(frame, return_distance=False):
    """Fill unsampled pixels with the value of the nearest sampled pixel.

    Parameters
    ----------
    frame : numpy.ndarray
        2-D partial scan (NaN = unsampled).
    return_distance : bool
        Also return the distance (pixels) of each pixel to its nearest sample.
    """
    frame = np.asarray(frame, dtype=np.float32)
    missing = ~np.isfinite(frame)
    check_frame(frame)
    if not missing.any():
        filled = frame.copy()
        dist = np.zeros(frame.shape, np.float32)
    else:
        dist, (ri, ci) = ndimage.distance_transform_edt(missing, return_indices=True)
        filled = frame[ri, ci]
        dist = dist.astype(np.float32)
    return (filled, dist) if return_distance else filled


#: How many Delaunay triangulations of sample positions are kept: a stack scanned
#: along one path (the usual acquisition) is triangulated once, not per frame.
TRIANGULATION_CACHE_SIZE = 8
#: Sample positions above which a triangulation is not cached (memory).
TRIANGULATION_CACHE_MAX_POINTS = 1_000_000

_tri_cache = OrderedDict()
_tri_lock = threading.Lock()


def _triangulation(sampled, pts):
    """Delaunay triangulation of the sample positions ``pts`` of mask ``sampled`` (cached per mask)."""
    key = (sampled.shape, hashlib.blake2b(np.packbits(sampled).tobytes(), digest_size=16).digest())
    with _tri_lock:
        tri = _tri_cache.get(key)
        if tri is not None:
            _tri_cache.move_to_end(key)
            return tri
    tri = Delaunay(pts)
    if len(pts) <= TRIANGULATION_CACHE_MAX_POINTS:
        with _tri_lock:
            _tri_cache[key] = tri
            while len(_tri_cache) > TRIANGULATION_CACHE_SIZE:
                _tri_cache.popitem(last=False)
    return tri


def clear_triangulation_cache():
    """Forget the cached triangulations (e.g. to time a frame as the first along its path)."""
    with _tri_lock:
        _tri_cache.clear()


def _griddata(frame, method, nearest=None):
    """``scipy.interpolate.griddata`` of the samples at the unsampled pixels, nearest outside the hull."""
    frame = np.asarray(frame, dtype=np.float32)
    check_frame(frame)
    sampled = np.isfinite(frame)
    if sampled.all():
        return frame.copy()
    pts = np.argwhere(sampled).astype(np.float64)
    near = nearest_fill(frame) if nearest is None else nearest
    if len(pts) < 4:
        return near
    missing = np.argwhere(~sampled)
    interpolator = interpolate.LinearNDInterpolator if method == "linear" else interpolate.CloughTocher2DInterpolator
    try:
        # one BLAS thread: the many small BLAS calls of the triangulation thrash
        # (10-100x slower) when BLAS threads compete for busy cores
        with _single_blas_thread():
            tri = _triangulation(sampled, pts)
            vals = interpolator(tri, frame[sampled])(missing.astype(np.float64))
    except QhullError:  # degenerate geometry (e.g. all samples on one line)
        return near
    out = near.copy()
    good = np.isfinite(vals)  # outside the convex hull the interpolators give NaN: keep nearest
    out[missing[good, 0], missing[good, 1]] = vals[good]
    return out


def linear_fill(frame, nearest=None):
    """Piecewise-linear interpolation on the Delaunay triangulation of the samples.

    Pixels outside the samples' convex hull take the nearest sample's value
    (``nearest``: a precomputed :func:`nearest_fill` of the frame, optional).
    """
    return _griddata(frame, "linear", nearest)


def cubic_fill(frame):
    """Piecewise-cubic (Clough-Tocher) interpolation; nearest outside the hull.

    It overshoots on line-like paths where samples are dense along one direction
    and sparse across it.
    """
    return _griddata(frame, "cubic")


def biharmonic_fill(frame, max_pixels=BIHARMONIC_MAX_PIXELS):
    """Biharmonic inpainting (scikit-image) of the unsampled pixels.

    Raises
    ------
    ValueError
        If the frame has more than ``max_pixels`` pixels.
    """
    from skimage.restoration import inpaint_biharmonic

    frame = np.asarray(frame, dtype=np.float32)
    check_frame(frame)
    if frame.size > max_pixels:
        raise ValueError(
            f"biharmonic inpainting solves a sparse system over every missing pixel; a "
            f"{frame.shape[0]}x{frame.shape[1]} frame exceeds its limit of {max_pixels} pixels. "
            "Use method='linear' or 'generator', or crop/bin the frame first."
        )
    missing = ~np.isfinite(frame)
    if not missing.any():
        return frame.copy()
    # scikit-image reads the masked pixels too: give them a finite value
    return inpaint_biharmonic(nearest_fill(frame), missing).astype(np.float32)


CLASSICAL_METHODS = {
    "nearest": nearest_fill,
    "linear": linear_fill,
    "cubic": cubic_fill,
    "biharmonic": biharmonic_fill,
}


def complete_frame(frame, method):
    """Complete one partial-scan frame with a classical method by name."""
    try:
        func = CLASSICAL_METHODS[method]
    except KeyError:
        choices = ", ".join(CLASSICAL_METHODS)
        raise ValueError(f"unknown classical completion method {method!r}; choose one of {choices}") from None
    return func(frame)
