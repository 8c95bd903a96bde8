"""Adaptive-style scan paths for training: a static path plus segments clustered where the specimen is informative.

The segment planners of :mod:`hyperspy_partialscan.planners` spend most of an
adaptive scan's dose on segments where the completion is least certain: far
from the samples and where the specimen has structure. Running the planner
(and the generator) for every training crop would cost far more than the
training step, so the training data imitate both planners with their own
segment rule (:func:`~hyperspy_partialscan.planners.choose_segments`, with the
planner's footprint) on the truth instead of the completion:

- ``"curvature"`` (the default planner): the predicted interpolation error
  (:func:`~hyperspy_partialscan.planners.interpolation_error`) of the truth,
  with short dashes of 4–16 pixels (the planner's 0.3 line spacings);
- ``"uncertainty"``: a proxy for sigma, the local contrast of the truth times
  a factor that grows with the distance to the nearest sample, with segments
  of 12–64 pixels.

Completing adaptive scans then stays in the generator's training distribution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..paths import ScanPath
from ..planners import choose_segments, default_footprint, interpolation_error

__all__ = ["proxy_sigma", "adaptive_style_path"]


def proxy_sigma(truth, mask, footprint):
    """What a completion's sigma looks like: local contrast of ``truth`` times the distance to the samples.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.training.adaptive_masks import proxy_sigma
    >>> truth = np.zeros((32, 32)); truth[:, 16:] = np.arange(16)  # flat left, structured right
    >>> mask = np.zeros((32, 32), bool); mask[::8, ::8] = True
    >>> s = proxy_sigma(truth, mask, 4.0)
    >>> bool(s[:, 20:].mean() > s[:, :12].mean()), float(s[mask].max())
    (True, 0.0)
    """
    truth = np.asarray(truth, np.float64)
    mean = ndimage.uniform_filter(truth, 7)
    contrast = np.sqrt(np.maximum(ndimage.uniform_filter(truth**2, 7) - mean**2, 0.0))
    span = float(np.ptp(truth)) or 1.0
    d = ndimage.distance_transform_edt(~mask)
    return (contrast / span + 0.02) * (1.0 - np.exp(-(d**2) / (2.0 * footprint**2)))


#: gain map ``(truth, sampled, footprint) -> map`` and segment lengths (pixels) of each planner imitated
_STYLES = {"curvature": (interpolation_error, (4, 16)), "uncertainty": (proxy_sigma, (12, 64))}


def adaptive_style_path(truth, initial, total, rng, *, style=None, segment_range=None, candidates=32):
    """``initial`` (a static path on ``truth``'s frame) extended by planner-style segments to ``total`` positions.

    Parameters
    ----------
    truth : numpy.ndarray
        The clean frame (2-D).
    initial : ScanPath
        The static first part of the scan, on ``truth``'s shape.
    total : int
        Positions of the whole scan (at least ``len(initial.positions)``).
    rng : numpy.random.Generator
    style : {"curvature", "uncertainty"}, optional
        The planner imitated (see the module's docstring); drawn with equal
        probability per scan by default.
    segment_range : tuple of int, optional
        Segment lengths (pixels) are drawn uniformly from this range per scan
        (default: the style's).
    candidates : int
        Start pixels drawn per segment (fewer than the planner's: speed).

    Returns
    -------
    ScanPath
        Named ``"adaptive"``; the initial positions first, then the segments in order.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.paths import generate_path
    >>> from hyperspy_partialscan.specimens import nanoparticle_field
    >>> from hyperspy_partialscan.training.adaptive_masks import adaptive_style_path
    >>> truth = nanoparticle_field((128, 128), seed=0)
    >>> initial = generate_path("spiral", truth.shape, 0.02, 0)
    >>> p = adaptive_style_path(truth, initial, 800, np.random.default_rng(0))
    >>> p.name, len(p.positions) <= 800, len(p.positions) > len(initial.positions)
    ('adaptive', True, True)
    """
    shape = truth.shape
    start = np.asarray(initial.positions, np.float64)
    extra = int(total) - len(start)
    if extra <= 0:
        return initial
    footprint = min(default_footprint(max(int(total), 1) / (shape[0] * shape[1])), 0.25 * min(shape))
    if style is None:
        style = ("curvature", "uncertainty")[int(rng.integers(2))]
    if style not in _STYLES:
        raise ValueError(f"style must be one of {sorted(_STYLES)}, got {style!r}")
    gain_map, default_range = _STYLES[style]
    gain = gain_map(truth, initial.mask, footprint)
    lo, hi = segment_range or default_range
    length = int(rng.integers(lo, hi + 1))
    probe = start[-1] if len(start) else None
    seg = choose_segments(gain, probe, extra, length, rng, candidates=candidates, footprint=footprint)
    positions = np.concatenate([start, seg]) if len(seg) else start
    return ScanPath(positions, np.ones(len(positions)), shape, "adaptive")
