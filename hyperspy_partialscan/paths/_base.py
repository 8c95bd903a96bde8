"""The scan-path container and the helpers every path family shares.

:class:`ScanPath` holds a path's ordered probe positions; :func:`_rasterise`
maps positions to the pixels they fall in; :func:`_arc_resample` spaces a
polyline's points evenly along its length; :func:`_smooth_walk` draws the smooth
random walks of scan-line and scan-coil jitter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ScanPath:
    """Ordered probe positions of a scan.

    Attributes
    ----------
    positions : numpy.ndarray
        ``(N, 2)`` float array of (row, column) probe positions in pixel units,
        in acquisition order. Pixel ``(i, j)`` spans ``[i - 0.5, i + 0.5)``.
    dwell : numpy.ndarray
        ``(N,)`` relative dwell time at each position (mean 1).
    shape : tuple of int
        Frame shape ``(rows, columns)``.
    name : str
        Path name (a key of :data:`PATHS`).
    options : dict
        Parameters that define the path (tuned gap, spacing, ...).

    Examples
    --------
    >>> p = ScanPath(np.array([[0.0, 0.0], [0.2, 1.4], [2.0, 2.0]]), np.ones(3), (3, 4), "custom")
    >>> p.mask.astype(int)
    array([[1, 1, 0, 0],
           [0, 0, 0, 0],
           [0, 0, 1, 0]])
    >>> round(p.coverage, 3)
    0.25
    >>> p.window(0, 1, (2, 2)).positions
    array([[0.2, 0.4]])
    >>> p.transposed().shape
    (4, 3)
    """

    positions: np.ndarray
    dwell: np.ndarray
    shape: tuple
    name: str
    options: dict = field(default_factory=dict)

    @property
    def pixel_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Rasterised ``(rows, cols)`` integer indices of in-field positions."""
        return _rasterise(self.positions, self.shape)

    @property
    def mask(self) -> np.ndarray:
        """Boolean ``shape`` array, True where at least one probe position falls."""
        rows, cols = self.pixel_indices
        mask = np.zeros(self.shape, dtype=bool)
        mask[rows, cols] = True
        return mask

    @property
    def coverage(self) -> float:
        """Measured fraction of sampled pixels."""
        return float(self.mask.mean())

    def window(self, top: int, left: int, shape: tuple[int, int]) -> ScanPath:
        """The part of the path inside a window, in the window's coordinates.

        Parameters
        ----------
        top, left : int
            Window origin in this path's pixel coordinates.
        shape : tuple of int
            Window shape (rows, columns).

        Returns
        -------
        ScanPath
            The positions that fall in the window, shifted by ``(-top, -left)``.
        """
        pos = self.positions - np.array([top, left], dtype=float)
        idx = np.rint(pos)
        keep = (idx[:, 0] >= 0) & (idx[:, 0] < shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < shape[1])
        return ScanPath(pos[keep], self.dwell[keep], tuple(shape), self.name, dict(self.options))

    def transposed(self) -> ScanPath:
        """The same path with rows and columns swapped (for dihedral augmentation)."""
        return ScanPath(self.positions[:, ::-1].copy(), self.dwell, self.shape[::-1], self.name, dict(self.options))


def _rasterise(positions, shape, return_inside=False):
    """Nearest-pixel indices of the in-field positions (and the in-field selector)."""
    idx = np.rint(positions).astype(np.int64)
    inside = (
        (idx[:, 0] >= 0) & (idx[:, 0] < shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < shape[1])
    )
    if return_inside:
        return idx[inside, 0], idx[inside, 1], inside
    return idx[inside, 0], idx[inside, 1]


def _arc_resample(points, step=1.0):
    """Resample a dense polyline at (approximately) constant arc length ``step``."""
    seg = np.hypot(*np.diff(points, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(s[-1] / step), 1)
    t = np.linspace(0, s[-1], n + 1)
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


def _smooth_walk(rng, n, amplitude, correlation):
    """Smooth random walk: Gaussian-filtered white noise scaled to ``amplitude`` (std)."""
    if amplitude == 0 or n == 0:
        return np.zeros(n)
    noise = ndimage.gaussian_filter1d(rng.standard_normal(n + 8 * int(correlation)), correlation, mode="wrap")
    noise = noise[: n]
    sd = noise.std()
    return noise / sd * amplitude if sd > 0 else noise
