"""Unbiased risk estimates: the error of a denoiser against the noise-free frame, from noisy data alone.

Stein's unbiased risk estimate (SURE) for Gaussian noise; used by
:func:`hyperspy_partialscan.fit_denoiser` to fit and to select the network
without clean references.
"""

from __future__ import annotations

import torch

__all__ = ["sure_per_item"]


def sure_per_item(net, x, probe=None, eps=1e-3):
    """Monte-Carlo SURE: per-item estimate of the MSE of ``net(x)`` against the noise-free frame.

    Stein's unbiased risk estimate for independent Gaussian noise of per-pixel
    variance σᵢ² (Ramani, Blu & Unser 2008; heteroscedastic form):
    ``mean((f(y) - y)² - σ² + 2 σ² ∂fᵢ/∂yᵢ)``, the divergence estimated with one
    random probe ``b``: ``b · (f(y + εb) - f(y)) / ε``. Needs no clean frame,
    so the denoiser itself (not a blind-spot variant) can be fitted to noisy
    data, and compared before and after fitting. Poisson noise is treated as
    Gaussian of the same variance (a close approximation from a few counts up).

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


