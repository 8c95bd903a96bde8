"""Unbiased risk estimates: the error of a denoiser against the noise-free frame, from noisy data alone.

Two estimates, used by :func:`hyperspy_partialscan.fit_denoiser` to fit and to
select the network without clean references:

* :func:`sure_per_item`, Stein's unbiased risk estimate for Gaussian noise
  (per-pixel variance from the network's noise-level channel);
* :func:`pure_per_item`, the Poisson(-Gaussian) unbiased risk estimate for
  shot noise of known gain, where SURE is biased at a few counts per pixel.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["sure_per_item", "pure_per_item", "draw_probe", "PURE_FRACTION"]

#: fraction of the pixels stepped down (and up) by one count in :func:`pure_per_item`'s probe
PURE_FRACTION = 0.005


def sure_per_item(net, x, probe=None, eps=1e-3):
    """Monte-Carlo SURE: per-item estimate of the MSE of ``net(x)`` against the noise-free frame.

    Stein's unbiased risk estimate for independent Gaussian noise of per-pixel
    variance σᵢ² (Ramani, Blu & Unser 2008; heteroscedastic form):
    ``mean((f(y) - y)² - σ² + 2 σ² ∂fᵢ/∂yᵢ)``, the divergence estimated with one
    random probe ``b``: ``b · (f(y + εb) - f(y)) / ε``. Needs no clean frame,
    so the denoiser itself (not a blind-spot variant) can be fitted to noisy
    data, and compared before and after fitting. Poisson noise is treated as
    Gaussian of the same variance (a close approximation from a few counts up;
    below, see :func:`pure_per_item`).

    Parameters
    ----------
    net : torch.nn.Module
        Denoising network taking (N, 2, H, W) inputs (noisy, noise-level map;
        see :func:`~hyperspy_partialscan.models.features.denoising_inputs`).
    x : torch.Tensor
        Its inputs; σ is read from the noise-level channel.
    probe : torch.Tensor, optional
        (N, 1, H, W) standard normal probe (fixed probes make the estimate
        deterministic); drawn if omitted.
    eps : float
        Finite-difference step in normalised intensity units.

    Returns
    -------
    torch.Tensor
        (N,) risk estimates (normalised intensity units squared).
    """
    from ..models.features import NOISE_MAP_GAIN

    y, level = x[:, :1], x[:, 1:]
    var = (level[:, :1] / NOISE_MAP_GAIN) ** 2
    b = torch.randn_like(y) if probe is None else probe
    f = net(x)
    f_probe = net(torch.cat([y + eps * b, level], 1))
    divergence = (var * b * (f_probe - f)).mean(dim=(1, 2, 3)) / eps
    return ((f - y) ** 2).mean(dim=(1, 2, 3)) - var.mean(dim=(1, 2, 3)) + 2 * divergence


def _per_item(value, name, n):
    """A scalar or (N,) noise parameter as an (N, 1, 1, 1) float tensor; ValueError naming it if bad."""
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if t.numel() not in (1, n) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, a scalar or one value per item ({n}), got {value!r}")
    if name != "offset" and bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0 (a variance coefficient), got {value!r}")
    return t.expand(n).reshape(n, 1, 1, 1)


def pure_per_item(net, x, gain, offset=0.0, gain_offset=0.0, probe=None, fraction=PURE_FRACTION, eps=1e-3):
    """Monte-Carlo PURE: per-item estimate of the MSE of ``net(x)`` against the noise-free frame, for shot noise.

    Poisson-Gaussian unbiased risk estimate (Luisier, Blu & Unser 2011; Le
    Montagner, Angelini & Olivo-Marin 2014). The noisy frame is
    ``y = c + a k + n``, ``k ~ Poisson(λ)``, ``n ~ N(0, b)``, so that its
    variance is ``a (x - c) + b`` (HyperSpy's ``Variance_linear_model`` with
    ``offset`` c, all in normalised units). With ``z = y - c`` and the
    identity ``E[a λᵢ h(z)] = E[zᵢ h(z - a eᵢ)]``::

        E ‖f - x‖² = E[‖f - y‖² + 2 Σ zᵢ (fᵢ(z) - fᵢ(z - a eᵢ)) + 2 b Σ ∂fᵢ/∂yᵢ - Σ (a zᵢ + b)]

    Unlike :func:`sure_per_item`, the weights are the noisy values zᵢ
    themselves (not a variance from a smoothed frame) and the one-count
    backward differences are not replaced by derivatives, so the estimate stays
    unbiased at a few counts per pixel, where fᵢ is far from linear over one
    count. All the differences are taken with one network call on a frame
    with a random ``fraction`` p of the pixels one count lower (only pixels
    that stay at or above zero counts) and as many others one count higher:
    a frame that could have been measured, so that a network fitted to the
    estimate cannot tell it from real data. With ``dᵢ`` 1 at the stepped-down
    pixels, 0 at the stepped-up ones and ``-p / (1 - 2p)`` at the other
    eligible ones (controls: there the difference is the effect of the
    neighbours' steps alone), ``dᵢ (fᵢ(y) - fᵢ(y - a·step)) / p`` estimates
    the one-count difference, and ``/ a`` the divergence of the Gaussian term.
    For a linear denoiser the estimate is exactly unbiased; what is left is
    the second-order effect of the neighbours' steps, proportional to p. The
    default p is small (:data:`PURE_FRACTION`, 0.5 %) because fitting finds
    that effect: on 10-counts-per-pixel crops of the training images, fitting
    the shipped denoiser with p = 5 % drove the estimate below zero while the
    true error rose, with p = 0.5 % both fell together (the estimate within
    3 % of the true error). With a = 0 (Gaussian noise) the estimate is SURE
    with a step of ``eps``.

    The noise-level channel is perturbed with the frame: the network sees the
    map computed from the frame itself (a smoothed frame,
    :func:`~hyperspy_partialscan.models.features.noise_level`), so ``f`` depends
    on each count through both channels, and the map's change
    (recomputed from the perturbed frame, same model) is added to the
    channel. Left fixed, the estimate of the shipped denoiser's error at 10
    counts per pixel was 9 % too high, and fitting can exploit the gap.

    Parameters
    ----------
    net, x : torch.nn.Module, torch.Tensor
        The denoising network and its (N, 2, H, W) inputs, normalised frames
        and noise-level maps, as for :func:`sure_per_item`.
    gain, offset, gain_offset : float or torch.Tensor
        Scalars or (N,) values in normalised units: one count's step a,
        the value c of zero signal and the Gaussian variance b (see
        :func:`~hyperspy_partialscan.models.features.normalised_noise`).
    probe : torch.Tensor, optional
        (N, 1, H, W) uniform [0, 1) values (:func:`draw_probe`); pixels below
        ``fraction`` are stepped down, those in [fraction, 2 fraction) up.
        Fixed probes make the estimate deterministic; drawn if omitted.
    fraction : float
        Fraction of the pixels stepped down (and of those stepped up), in (0, 0.5).
    eps : float
        Finite-difference step of the divergence where a = 0.

    Returns
    -------
    torch.Tensor
        (N,) risk estimates (normalised intensity units squared).

    Raises
    ------
    ValueError
        A noise parameter not finite, negative (``gain``, ``gain_offset``) or
        of the wrong length, or ``fraction`` outside (0, 0.5).

    Examples
    --------
    The identity "denoiser" keeps all the noise, a mean variance of a x̄:

    >>> import torch
    >>> from hyperspy_partialscan.training import pure_per_item
    >>> gen = torch.Generator().manual_seed(0)
    >>> y = 0.1 * torch.poisson(torch.full((1, 1, 256, 256), 5.0), generator=gen)  # 5 counts, a = 0.1
    >>> x = torch.cat([y, torch.zeros_like(y)], 1)
    >>> risk = pure_per_item(lambda t: t[:, :1], x, gain=0.1, probe=torch.rand(y.shape, generator=gen))
    >>> abs(float(risk[0]) - 0.1 * 0.5) < 0.005  # true risk: a x = 0.1 * 0.5
    True
    """
    if not 0 < fraction < 0.5:
        raise ValueError(f"fraction must be in (0, 0.5), got {fraction}")
    n = x.shape[0]
    a, c, b = (_per_item(v, k, n) for v, k in ((gain, "gain"), (offset, "offset"), (gain_offset, "gain_offset")))
    a, c, b = a.to(x), c.to(x), b.to(x)
    y, level = x[:, :1], x[:, 1:]
    from ..models.features import noise_level

    z = y - c
    step = torch.where(a > 0, a, torch.full_like(a, eps))
    # only where the stepped value stays in the range real frames reach (no negative counts): a frame the
    # network could tell from a real one would let fitting drive the estimate down without bound
    eligible = z - step > -3 * b.sqrt() - step / 2
    u = torch.rand_like(y) if probe is None else probe.to(y)
    down = ((u < fraction) & eligible).to(y)
    up = ((u >= fraction) & (u < 2 * fraction)).to(y)  # as many pixels one count up: the mean is kept
    d = down - ((u >= 2 * fraction) & eligible).to(y) * (fraction / (1 - 2 * fraction))  # the others: controls
    perturbed = y - step * (down - up)
    level_change = noise_level(_smooth(perturbed), a, c, b) - noise_level(_smooth(y), a, c, b)
    f = net(x)
    diff = f - net(torch.cat([perturbed, level + level_change], 1))
    # E[dᵢ diffᵢ] / p = fᵢ(z) - fᵢ(z - a eᵢ): the controls cancel the neighbours' steps (first order)
    backward = (a > 0).to(y) * z * d * diff / fraction
    divergence = d * diff / (fraction * step)
    return ((f - y) ** 2 + 2 * backward + 2 * b * divergence - (a * z + b)).mean(dim=(1, 2, 3))


def _smooth(y):
    """``scipy.ndimage.gaussian_filter(y, NOISE_MAP_SMOOTHING)`` of (N, 1, H, W) tensors (its kernel and edges)."""
    from ..models.features import NOISE_MAP_SMOOTHING as sigma

    r = int(4.0 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=y.dtype, device=y.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    for dim, shape in ((2, (1, 1, -1, 1)), (3, (1, 1, 1, -1))):
        n = y.shape[dim]
        idx = torch.arange(-r, n + r, device=y.device) % (2 * n)
        y = torch.nn.functional.conv2d(y.index_select(dim, torch.where(idx >= n, 2 * n - 1 - idx, idx)), k.view(shape))
    return y


def draw_probe(method, rng, shape):
    """A fixed probe of the risk estimate ``method`` ("sure": standard normal; "pure": uniform), float32 tensor.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.training.risk import draw_probe
    >>> tuple(draw_probe("pure", np.random.default_rng(0), (2, 1, 4, 4)).shape)
    (2, 1, 4, 4)
    """
    values = rng.uniform(size=shape) if method == "pure" else rng.standard_normal(shape)
    return torch.from_numpy(values.astype(np.float32))
