"""Archimedean spiral scan path (Ede & Beanland 2020)."""

from __future__ import annotations

import numpy as np

from .._docstrings import fill_doc
from .._validation import check_choice, check_number, check_path_size
from ._base import ScanPath
from ._tune import _tune


def _spiral_arc(theta, b):
    """Arc length of the Archimedean spiral ``r = b theta`` from 0 to ``theta``.

    Parameters
    ----------
    theta : float or numpy.ndarray
        Polar angle(s), radians.
    b : float
        Radial growth per radian.

    Returns
    -------
    float or numpy.ndarray
    """
    return 0.5 * b * (theta * np.sqrt(1 + theta * theta) + np.arcsinh(theta))


def _inside(pos, shape):
    """Selector of the positions inside the field ``[-0.5, n - 0.5)`` on both axes."""
    return (
        (pos[:, 0] > -0.5) & (pos[:, 0] < shape[0] - 0.5) & (pos[:, 1] > -0.5) & (pos[:, 1] < shape[1] - 0.5)
    )


@fill_doc
def spiral(
    shape: tuple[int, int],
    coverage: float,
    rng: np.random.Generator,
    *,
    speed: str = "linear",
    step: float = 1.0,
    centre_jitter: float = 0.1,
    gap: float | None = None,
) -> ScanPath:
    """Archimedean spiral (Ede & Beanland 2020).

    The arm gap starts at ``1 / coverage`` pixels and is tuned so that the
    measured coverage matches the request. The phase is random and the centre is
    offset randomly by up to ``centre_jitter`` of the frame size. The spiral
    extends to the farthest frame corner; positions outside the field are dropped.
    Successive positions are ``step`` apart along the spiral's arc.

    Parameters
    ----------
    {path_shape_coverage}
    rng : numpy.random.Generator
        Random generator (centre offset and phase).
    speed : {{"linear", "angular"}}
        ``"linear"``: constant probe speed, equal dwell per position.
        ``"angular"``: constant angular velocity; the probe moves slowly near the
        centre, so dwell per position is proportional to ``1 / r``.
    step : float
        Distance between successive positions along the path, in pixels.
    centre_jitter : float
        Largest random offset of the centre, as a fraction of the frame size,
        in [0, 0.5].
    gap : float, optional
        Fix the arm gap in pixels instead of tuning it from ``coverage``.

    Returns
    -------
    ScanPath
        Options: the arm ``gap`` (tuned or given), ``speed``, ``step``, the
        ``centre`` (row, column) and the ``phase`` (radians).

    Examples
    --------
    >>> p = spiral((128, 128), 0.05, np.random.default_rng(0), centre_jitter=0)
    >>> p.name, p.options["centre"]
    ('spiral', [63.5, 63.5])
    >>> abs(p.coverage / 0.05 - 1) < 0.05
    True
    >>> spiral((64, 64), 0.1, np.random.default_rng(0), gap=8.0).options["gap"]
    8.0
    """
    check_choice("spiral speed", speed, ("linear", "angular"))
    step = check_number("spiral step", step, low=0, low_inclusive=False)
    centre_jitter = check_number("spiral centre_jitter", centre_jitter, low=0, high=0.5)
    gap = check_number("spiral gap", gap, low=0, low_inclusive=False, allow_none=True)
    h, w = shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2]) + rng.uniform(-1, 1, 2) * centre_jitter * np.array(
        [h, w]
    )
    phase = rng.uniform(0, 2 * np.pi)
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], dtype=float)
    r_max = np.hypot(*(corners - centre).T).max() + 1

    def build(g):
        # Archimedean spiral r = b theta (arm gap g = 2 pi b), sampled at equal
        # arc-length steps: invert the arc length s(theta) by Newton's method,
        # starting from an upper bound (s is convex in theta: monotone convergence)
        b = g / (2 * np.pi)
        theta_max = r_max / b
        n = int(_spiral_arc(theta_max, b) / step)
        check_path_size("spiral", n, shape)
        s = np.arange(n + 1) * step
        theta = np.minimum(np.sqrt(2 * s / b), s / b)
        for _ in range(50):
            delta = (_spiral_arc(theta, b) - s) / (b * np.sqrt(1 + theta * theta))
            theta -= delta
            if not np.any(np.abs(delta) > 1e-9):
                break
        r = b * theta
        return np.stack([centre[0] + r * np.sin(theta + phase), centre[1] + r * np.cos(theta + phase)], axis=1)

    if gap is None:
        gap, pos = _tune(build, 1.0 / coverage, coverage, shape, exponent=-1.0, bounds=(0.5, 4 * r_max),
                         name="spiral", quantum=max(2.0, r_max))
    else:
        pos = build(gap)
    inside = _inside(pos, shape)
    pos = pos[inside]
    if speed == "angular":
        r = np.hypot(*(pos - centre).T)
        dwell = 1.0 / np.maximum(r, 1.0)
        dwell /= dwell.mean()
    else:
        dwell = np.ones(len(pos))
    return ScanPath(
        pos,
        dwell,
        tuple(shape),
        "spiral",
        {"gap": float(gap), "speed": speed, "step": step, "centre": centre.tolist(), "phase": float(phase)},
    )
