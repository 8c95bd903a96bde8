"""Batched network inference on numpy frames (GPU when present, CPU otherwise)."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..device import autocast, select_device, to_device

__all__ = ["denoise_batch", "run_network", "to_intensity_scale"]


def _pad_to(t, multiple):
    h, w = t.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        t = F.pad(t, (0, pw, 0, ph), mode=mode)
    return t, (h, w)


def run_network(network, inputs, device=None, precision=None):
    """Run ``network`` on a numpy batch (N, C, H, W); returns numpy (N, H, W) float32.

    Frames are padded to the network's size multiple and cropped back.
    """
    device = select_device(device) if not isinstance(device, torch.device) else device
    multiple = getattr(network, "multiple", 1)
    with torch.inference_mode(), autocast(device, precision):
        x = to_device(np.ascontiguousarray(inputs, dtype=np.float32), device)
        x, (h, w) = _pad_to(x, multiple)
        y = network(x.contiguous(memory_format=torch.channels_last))[:, 0, :h, :w]
    return y.float().cpu().numpy()


def to_intensity_scale(y, scales):
    """Map normalised outputs (N, H, W) back with each frame's (offset, scale)."""
    lo = np.array([s[0] for s in scales], np.float32)[:, None, None]
    sc = np.array([s[1] for s in scales], np.float32)[:, None, None]
    return y * sc + lo


def denoise_batch(network, frames, device=None, precision=None, variance_model=None, sigma=None):
    """Denoise a batch of frames (N, H, W) with a denoising network; same intensity scale out.

    ``variance_model``: one for all frames, one per frame, or None (blind, per
    frame); see :func:`~.features.denoising_inputs`.
    """
    from .features import denoising_inputs

    inputs, scales = denoising_inputs(frames, variance_model, sigma)
    return to_intensity_scale(run_network(network, inputs, device, precision), scales)
