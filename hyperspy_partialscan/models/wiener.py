"""Empirical Wiener filtering on sliding windows: the periodic-content guide of the denoiser.

A lattice image is, window by window, a few strong Fourier peaks over white
noise. A Wiener filter on overlapping windows keeps those peaks and removes the
noise between them; it recovers atomic columns a few pixels apart that a U-Net's
receptive field sees only as texture (Yaroslavsky's sliding-window DCT filter and
the second stage of BM3D rest on the same estimate). It is a differentiable
function of the frame and its noise level, so the network computes it inside its
forward pass (:class:`~hyperspy_partialscan.models.networks.DenoisingUNet`,
``wiener=(window, hop)``) and self-supervised risk estimates that perturb the input see it
change.

The filter runs twice, as BM3D does: a first pass estimates each window's
signal spectrum by spectral subtraction (``|Y|^2 - noise power``), a second
applies the Wiener gain ``P / (P + noise power)`` with the spectrum ``P`` of the
first pass's estimate. The noise may vary over the frame (shot noise): each
window uses its own mean noise variance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["sliding_wiener"]


def _window(size, device, dtype):
    w = torch.sin(math.pi * (torch.arange(size, device=device, dtype=dtype) + 0.5) / size)
    return w[:, None] * w[None, :]


def sliding_wiener(x: torch.Tensor, noise_var: torch.Tensor, window: int = 32, hop: int = 8) -> torch.Tensor:
    """Two-pass empirical Wiener filter of ``x`` on overlapping ``window`` x ``window`` tiles.

    Parameters
    ----------
    x : torch.Tensor
        Noisy frames, shape (N, 1, H, W).
    noise_var : torch.Tensor
        Per-pixel noise variance of ``x``, broadcastable to its shape.
    window : int
        Side of the square tiles (pixels); a sine window tapers each.
    hop : int
        Step between tiles; ``window`` must be a multiple of it.

    Returns
    -------
    torch.Tensor
        The filtered frames, the shape of ``x``.

    Examples
    --------
    >>> import math, torch
    >>> from hyperspy_partialscan.models.wiener import sliding_wiener
    >>> g = torch.Generator().manual_seed(0)
    >>> r = torch.arange(64.0)
    >>> clean = (torch.sin(2 * math.pi * r / 8)[:, None] * torch.sin(2 * math.pi * r / 8)[None, :])[None, None]
    >>> noisy = clean + 0.5 * torch.randn(clean.shape, generator=g)
    >>> y = sliding_wiener(noisy, torch.tensor(0.25))
    >>> bool(((y - clean) ** 2).mean() < 0.2 * ((noisy - clean) ** 2).mean())  # noise power down more than 5x
    True
    """
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"x must have shape (N, 1, H, W), got {tuple(x.shape)}")
    if window % hop:
        raise ValueError(f"window ({window}) must be a multiple of hop ({hop})")
    n, _, h, w = x.shape
    pad = window - hop
    # pad so every pixel is covered by the same number of tiles and the size is a whole number of hops
    ph, pw = pad + (-h) % hop, pad + (-w) % hop
    mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
    xp = F.pad(x, (pad, pw, pad, ph), mode=mode)
    vp = F.pad(torch.broadcast_to(noise_var, x.shape).to(x.dtype), (pad, pw, pad, ph), mode="replicate")
    size = xp.shape[-2:]
    win = _window(window, x.device, x.dtype)

    def tiles(t):  # (N, L, window, window)
        return F.unfold(t, window, stride=hop).transpose(1, 2).reshape(n, -1, window, window)

    def untiles(t):  # overlap-add of windowed tiles (N, L, window, window) -> (N, 1, *size)
        return F.fold((t * win).reshape(n, t.shape[1], -1).transpose(1, 2), size, window, stride=hop)

    def spectra(t):
        patches = tiles(t)
        mean = patches.mean(dim=(-2, -1), keepdim=True)
        return torch.fft.fft2((patches - mean) * win), mean

    def power(z):
        return z.real**2 + z.imag**2

    spectrum, mean = spectra(xp)
    norm = untiles(win.expand(n, spectrum.shape[1], window, window)).clamp(min=1e-12)
    # white noise of variance v through the window: power v * sum(win^2) at every frequency
    noise_power = tiles(vp).mean(dim=(-2, -1), keepdim=True) * (win**2).sum()
    p = power(spectrum)
    first = torch.fft.ifft2(spectrum * ((p - noise_power).clamp(min=0) / p.clamp(min=1e-12))).real + mean * win
    pilot, _ = spectra(untiles(first) / norm)
    p = power(pilot)
    out = untiles(torch.fft.ifft2(spectrum * (p / (p + noise_power))).real + mean * win) / norm
    return out[..., pad:pad + h, pad:pad + w]
