"""Synthetic S/TEM specimens, generated (no downloads): for the demo, tests and training.

These are simple physical caricatures, not image simulations: Gaussian atomic
columns on a lattice with grains and vacancies, and metal nanoparticles on an
amorphous support, with a realistic intensity range.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["atomic_lattice", "nanoparticle_field"]


def _support(rng, shape, strength=0.15, sigma=1.5):
    """Amorphous support: smoothed noise at two scales."""
    a = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    b = ndimage.gaussian_filter(rng.standard_normal(shape), 12 * sigma)
    a /= a.std() + 1e-12
    b /= b.std() + 1e-12
    return strength * (0.7 * a + 0.3 * b)


def atomic_lattice(shape=(512, 512), spacing=12.0, seed=None, grains=3, vacancies=0.03):
    """HAADF-like image of atomic columns in a few rotated grains.

    Parameters
    ----------
    shape : tuple of int
    spacing : float
        Lattice constant in pixels.
    seed : int, optional
    grains : int
        Number of grains (Voronoi regions with random orientation).
    vacancies : float
        Fraction of missing columns.

    Returns
    -------
    numpy.ndarray
        float32 image, roughly in [0, 1].
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    centres = rng.uniform(0, 1, (grains, 2)) * [h, w]
    owner = np.argmin(((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2), axis=-1)
    img = np.zeros(shape)
    sigma = spacing * rng.uniform(0.12, 0.2)
    for g in range(grains):
        theta = rng.uniform(0, np.pi)
        a = spacing * rng.uniform(0.9, 1.1)
        basis = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]]) * a
        if rng.uniform() < 0.5:  # hexagonal
            basis[1] = basis[0] * 0.5 + basis[1] * np.sqrt(3) / 2
        n = int(np.hypot(h, w) / a) + 2
        ij = np.stack(np.meshgrid(np.arange(-n, n), np.arange(-n, n)), -1).reshape(-1, 2)
        pos = ij @ basis + rng.uniform(0, a, 2)
        margin = 3 * sigma
        keep = (pos[:, 0] > -margin) & (pos[:, 0] < h + margin) & (pos[:, 1] > -margin) & (pos[:, 1] < w + margin)
        pos = pos[keep]
        pos = pos[rng.uniform(size=len(pos)) > vacancies]
        inten = rng.choice([0.6, 1.0], size=len(pos), p=[0.5, 0.5]) if rng.uniform() < 0.5 else np.ones(len(pos))
        layer = np.zeros(shape)
        r = np.clip(np.rint(pos).astype(int), 0, [h - 1, w - 1])
        np.add.at(layer, (r[:, 0], r[:, 1]), inten)
        layer = ndimage.gaussian_filter(layer, sigma) * 2 * np.pi * sigma**2
        img += np.where(owner == g, layer, 0)
    img = ndimage.gaussian_filter(img, 0.5) + _support(rng, shape, 0.05) + 0.1
    return np.clip(img, 0, None).astype(np.float32)


def nanoparticle_field(shape=(512, 512), n_particles=None, seed=None, radius=(4.0, 30.0)):
    """HAADF-like image of faceted, partly crystalline nanoparticles on amorphous support.

    Parameters
    ----------
    shape : tuple of int
    n_particles : int, optional
        Default: scales with the frame area.
    seed : int, optional
    radius : tuple of float
        Range of particle radii in pixels (log-uniform).

    Returns
    -------
    numpy.ndarray
        float32 image (support and particles), roughly in [0, 1].
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    if n_particles is None:
        n_particles = max(3, int(h * w / 6000))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = 0.15 + _support(rng, shape, 0.04)
    for _ in range(n_particles):
        r = float(np.exp(rng.uniform(*np.log(radius))))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sides = rng.integers(5, 9)
        phi = rng.uniform(0, 2 * np.pi)
        ang = np.arctan2(yy - cy, xx - cx) - phi
        rad = np.hypot(yy - cy, xx - cx)
        # regular polygon radius at this angle (faceted particle)
        edge = r * np.cos(np.pi / sides) / np.cos((ang % (2 * np.pi / sides)) - np.pi / sides)
        inside = rad < edge
        thickness = np.sqrt(np.clip(1 - (rad / np.maximum(edge, 1e-6)) ** 2, 0, 1))
        contrast = rng.uniform(0.4, 1.0)
        part = contrast * thickness * inside
        if r > 10 and rng.uniform() < 0.6:  # lattice fringes in larger particles
            k = 2 * np.pi / rng.uniform(3, 6)
            t = rng.uniform(0, np.pi)
            part *= 0.8 + 0.2 * np.cos(k * (np.cos(t) * yy + np.sin(t) * xx))
        img = np.maximum(img, img * (1 - inside) + part * inside + 0.15 * inside)
    img = ndimage.gaussian_filter(img, 0.7)
    return np.clip(img, 0, None).astype(np.float32)
