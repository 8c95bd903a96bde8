"""Frames to train on: images read from files, plus generated specimens."""

from __future__ import annotations

import numpy as np

from ..io import read_frames
from ..specimens import atomic_lattice, nanoparticle_field

__all__ = ["training_frames"]


def training_frames(sources, *, max_frames_per_file=8, synthetic=0, seed=0, lattices=0, lattice_spacing=(20, 35)):
    """Frames for training: files/folders/globs plus ``synthetic`` generated specimens.

    Stacks contribute at most ``max_frames_per_file`` frames (evenly spaced) so
    that long tilt series or movies don't dominate. ``lattices`` more atomic
    lattices have lattice constants log-uniform over ``lattice_spacing`` (px),
    e.g. near a scan's line spacing, where sparse samples alias the lattice
    (drawn after, and independently of, the ``synthetic`` specimens).

    Returns
    -------
    list of numpy.ndarray
        2-D frames: those read (:func:`hyperspy_partialscan.io.read_frames`), then the generated ones.
    """
    frames = read_frames(sources, max_frames_per_file=max_frames_per_file) if sources else []
    rng = np.random.default_rng(seed)
    for i in range(synthetic):
        size = int(rng.choice(_SIZES))
        if i % 2:
            frames.append(nanoparticle_field((size, size), seed=int(rng.integers(2**31))))
        else:
            # lattice constants up to about twice the spiral's arm gap at 1/20, where sparse samples alias the lattice
            frames.append(_lattice(rng, size, (6, 45)))
    rng = np.random.default_rng([seed, 1])
    frames += [_lattice(rng, int(rng.choice(_SIZES)), lattice_spacing) for _ in range(lattices)]
    return frames


#: sides of the generated specimens (px)
_SIZES = (512, 768, 1024)


def _lattice(rng, size, spacing_range):
    """A generated atomic lattice of ``size`` px, its lattice constant log-uniform over ``spacing_range``."""
    lo, hi = spacing_range
    spacing = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return atomic_lattice((size, size), spacing=spacing, seed=int(rng.integers(2**31)))
