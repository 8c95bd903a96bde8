"""Line-hop scan path (Kovarik et al. 2016)."""

from __future__ import annotations

import numpy as np

from .._docstrings import fill_doc
from .._validation import check_number
from ._base import ScanPath


@fill_doc
def line_hop(
    shape: tuple[int, int], coverage: float, rng: np.random.Generator, *, segment_length: float = 16.0,
    band: float | None = None,
) -> ScanPath:
    """Line-hop sampling (Kovarik et al. 2016): short raster segments at random lines.

    The frame is divided into bands of ``band`` rows (default ``1 / coverage``).
    The probe sweeps each band once along the fast axis, hopping at random to a
    new row of the band after each segment (lengths exponential with mean
    ``segment_length`` pixels). At least one segment is scanned.

    Parameters
    ----------
    {path_shape_coverage}
    rng : numpy.random.Generator
        Random generator (band origin, segment lengths and rows).
    segment_length : float
        Mean segment length in pixels.
    band : float, optional
        Band height in pixels, at least 1 (overrides ``coverage``).

    Returns
    -------
    ScanPath
        Options: the ``band`` height and the mean ``segment_length``.

    Examples
    --------
    >>> p = line_hop((128, 128), 0.1, np.random.default_rng(0))
    >>> p.options
    {{'band': 10.0, 'segment_length': 16.0}}
    >>> bool(abs(p.coverage / 0.1 - 1) < 0.25)
    True
    """
    h, w = shape
    segment_length = check_number("line_hop segment_length", segment_length, low=0, low_inclusive=False)
    d = check_number("line_hop band", 1.0 / coverage if band is None else band, low=1)
    out = []
    skipped = None
    o = rng.uniform(0, d)
    starts = np.concatenate([[0.0], np.arange(o, h, d)]) if o > 0.5 else np.arange(o, h, d)
    edges = np.append(starts, h)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        rows = np.arange(int(np.ceil(lo - 0.5)), int(np.ceil(hi - 0.5)))
        rows = rows[(rows >= 0) & (rows < h)]
        if rows.size == 0:
            continue
        # only a (hi - lo)/d fraction of a full band: fewer pixels in partial edge bands
        x = 0
        frac = (hi - lo) / d
        while x < w:
            n = max(int(round(rng.exponential(segment_length))), 1)
            xs = np.arange(x, min(x + n, w), dtype=float)
            if rng.uniform() < frac:
                out.append(np.stack([np.full(xs.size, float(rng.choice(rows))), xs], axis=1))
            else:
                skipped = (xs, rows)
            x += n
    if not out and skipped is not None:  # very low coverage on a small frame: scan at least one segment
        xs, rows = skipped
        out.append(np.stack([np.full(xs.size, float(rng.choice(rows))), xs], axis=1))
    pos = np.concatenate(out) if out else np.zeros((0, 2))
    return ScanPath(pos, np.ones(len(pos)), tuple(shape), "line_hop", {"band": d, "segment_length": segment_length})
