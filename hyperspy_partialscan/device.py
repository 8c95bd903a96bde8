"""Device selection and precision control for the PyTorch models."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["select_device", "check_precision", "default_network_batch", "autocast", "to_device"]

#: inference precisions: None and "float32" are full precision
PRECISIONS = (None, "float32", "bfloat16", "float16")
#: frames (or 512x512 tiles) per network call on the CPU, by task (more gains nothing on two cores)
CPU_NETWORK_BATCH = {"completion": 2, "denoising": 4}
#: frames (or 512x512 tiles) per network call on an accelerator: fills a GPU without running out of memory
GPU_NETWORK_BATCH = 16


def select_device(device=None):
    """Return the :class:`torch.device` to run on.

    Parameters
    ----------
    device : str or torch.device or None
        ``None`` or ``"auto"`` picks CUDA, then Apple MPS, then the CPU.
        Otherwise any device string torch understands (``"cpu"``, ``"cuda:1"``).

    Raises
    ------
    ValueError
        For an unknown device string or a device that is not available.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use None, 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return dev


def check_precision(precision):
    """Validate an inference precision, before anything runs.

    Examples
    --------
    >>> from hyperspy_partialscan.device import check_precision
    >>> check_precision("bfloat16")
    'bfloat16'
    >>> check_precision("half")
    Traceback (most recent call last):
    ...
    ValueError: precision must be None, 'float32', 'bfloat16' or 'float16', not 'half'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be None, 'float32', 'bfloat16' or 'float16', not {precision!r}")
    return precision


def default_network_batch(device, task):
    """Frames (or tiles) per network call: :data:`CPU_NETWORK_BATCH` on the CPU, :data:`GPU_NETWORK_BATCH` else.

    Examples
    --------
    >>> import torch
    >>> from hyperspy_partialscan.device import default_network_batch
    >>> default_network_batch(torch.device("cpu"), "completion")
    2
    """
    if device.type == "cpu":
        return CPU_NETWORK_BATCH.get(task, 2)
    return GPU_NETWORK_BATCH


def autocast(device, precision=None):
    """Context manager for reduced precision inference.

    ``precision`` None or "float32" runs in full precision; "bfloat16" or
    "float16" enable :func:`torch.autocast` on that device type (bfloat16 also
    works on the CPU, which is how the tests exercise this path).
    """
    if precision in (None, "float32", torch.float32):
        return contextlib.nullcontext()
    check_precision(precision)
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    return torch.autocast(device_type=device.type, dtype=dtypes[precision])


def to_device(array, device):
    """Numpy array to a float32 tensor on ``device`` (pinned, non-blocking copy on CUDA)."""
    t = torch.from_numpy(array)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
