"""Signal-level helpers shared by the signal-level modules (conversion, completion, denoising).

Nothing here changes an input signal: new signals are built from read-only
views of the input's axes and metadata (HyperSpy's ``_deepcopy_with_new_data``
sets the input's data to None while it copies, which breaks concurrent calls
on one signal).
"""

from __future__ import annotations

import copy

import numpy as np

from .engine import compute

__all__ = ["validate_signal2d", "signal_like", "check_laziness", "deliver", "variance_model", "noise_source",
           "LAZY_NOTE"]

#: what the metadata say of a per-frame figure that a lazy output has not computed yet
LAZY_NOTE = "not computed (lazy output)"


def validate_signal2d(signal, what="this operation"):
    """Raise a clear error unless ``signal`` is a real-valued HyperSpy signal of 2-D frames, at least one.

    Parameters
    ----------
    signal : object
        The object to check.
    what : str
        The operation, for the messages.

    Raises
    ------
    TypeError
        Not a HyperSpy signal, or complex or non-numeric data.
    ValueError
        Not two signal dimensions; no frames (a navigation axis of size 0)
        or empty frames.

    Examples
    --------
    >>> import numpy as np, hyperspy.api as hs
    >>> from hyperspy_partialscan._signal_tools import validate_signal2d
    >>> validate_signal2d(hs.signals.Signal2D(np.zeros((2, 4, 4))), "denoise")
    >>> validate_signal2d(hs.signals.Signal2D(np.zeros((0, 4, 4))), "denoise")
    Traceback (most recent call last):
    ...
    ValueError: denoise: the signal has no frames (navigation size 0), data shape (0, 4, 4)
    """
    from hyperspy.signals import BaseSignal

    if not isinstance(signal, BaseSignal):
        raise TypeError(f"{what} needs a HyperSpy signal, not {type(signal).__name__}")
    dim = signal.axes_manager.signal_dimension
    if dim != 2:
        raise ValueError(
            f"{what} needs a signal with 2 signal dimensions (an image, Signal2D); this one has {dim}. "
            "Use `transpose(signal_axes=2)` or `as_signal2D` to choose the image axes."
        )
    if np.issubdtype(signal.data.dtype, np.complexfloating):
        raise TypeError(f"{what} needs real-valued data, got complex ({signal.data.dtype}); "
                        "take .real, .amplitude or .phase first")
    if not (np.issubdtype(signal.data.dtype, np.number) or signal.data.dtype == bool):
        raise TypeError(f"{what} needs numeric data, got {signal.data.dtype}")
    shape = tuple(signal.data.shape)
    if any(n == 0 for n in shape[:-2]):
        raise ValueError(f"{what}: the signal has no frames (navigation size 0), data shape {shape}")
    if any(n == 0 for n in shape[-2:]):
        raise ValueError(f"{what}: the signal's frames are empty, data shape {shape}")


def signal_like(signal, data, *, signal_type=None, title=None, keep_noise_model=True):
    """A new signal with ``signal``'s axes, metadata and original_metadata and new ``data``.

    ``signal`` is only read (never modified, not even for a moment), so
    several threads may derive signals from one input at once.

    Parameters
    ----------
    signal : hyperspy.signal.BaseSignal
        Source of the axes, metadata and original_metadata.
    data : numpy.ndarray or dask.array.Array
        The new data, of ``signal``'s shape; a dask array gives a lazy signal.
    signal_type : str, optional
        The new signal type (``""`` for a plain Signal2D); default: as ``signal``.
    title : str, optional
        New title.
    keep_noise_model : bool
        Keep ``metadata.Signal.Noise_properties`` (the detector's variance
        model) except its data-sized ``variance``, which no longer matches the
        new data. False drops it all (e.g. when new noise was simulated).

    Returns
    -------
    hyperspy.signal.BaseSignal
        Of the class HyperSpy assigns to the signal type, dimensions and laziness.

    Examples
    --------
    >>> import numpy as np
    >>> import hyperspy.api as hs
    >>> from hyperspy_partialscan._signal_tools import signal_like
    >>> s = hs.signals.Signal2D(np.zeros((4, 5)))
    >>> s.axes_manager[0].scale = 0.5
    >>> t = signal_like(s, np.ones((4, 5)), title="ones")
    >>> t.axes_manager[0].scale, t.metadata.General.title, float(s.data.sum())
    (0.5, 'ones', 0.0)
    """
    import dask.array as da
    from hyperspy.signals import BaseSignal

    if tuple(data.shape) != tuple(signal.data.shape):
        raise ValueError(f"new data of shape {tuple(data.shape)} does not match the signal's {signal.data.shape}")
    metadata = signal.metadata.as_dictionary()
    noise = metadata.get("Signal", {}).pop("Noise_properties", None)
    metadata.get("_HyperSpy", {}).pop("navigator", None)
    metadata = copy.deepcopy(metadata)
    if keep_noise_model and isinstance(noise, dict):
        noise.pop("variance", None)
        noise.pop("_sig_variance", None)  # (how as_dictionary stores a signal-valued item)
        metadata["Signal"]["Noise_properties"] = copy.deepcopy(noise)
    if signal_type is not None:
        metadata["Signal"]["signal_type"] = signal_type
    if title is not None:
        metadata["General"]["title"] = title
    axes = [copy.deepcopy(d) for d in signal.axes_manager.as_dictionary().values()]
    out = BaseSignal(data, axes=axes, metadata=metadata,
                     original_metadata=copy.deepcopy(signal.original_metadata.as_dictionary()))
    out._lazy = isinstance(data, da.Array)
    out._assign_subclass()
    return out


def check_laziness(signal, inplace, lazy_output):
    """Resolve ``lazy_output`` (default: as the input) and refuse ``inplace`` changing it."""
    lazy_output = signal._lazy if lazy_output is None else bool(lazy_output)
    if inplace and lazy_output != signal._lazy:
        raise ValueError("inplace=True cannot change laziness: leave lazy_output unset or use inplace=False")
    return lazy_output


def deliver(signal, result, *, lazy_output, show_progressbar, inplace, title, record_path, record, signal_type=None,
            validate=None):
    """Hand a processed array back as HyperSpy expects.

    Computes ``result`` (with a progress bar) unless ``lazy_output``; then
    either builds a new signal (:func:`signal_like`) or, with ``inplace``,
    replaces ``signal``'s data. Either way the title is set and the processing
    ``record`` is written at ``metadata.<record_path>``; the data-sized
    ``Noise_properties.variance`` no longer matches and is dropped.

    ``signal`` is modified only with ``inplace`` and only once nothing can fail
    any more: a non-lazy result is computed first; for a lazy in-place result,
    ``validate()`` (which should read the input and raise for anything the
    lazy computation would fail on) runs before the signal is touched.
    """
    import dask.array as da

    is_lazy = isinstance(result, da.Array)
    if lazy_output and not is_lazy:
        result = da.from_array(result)
    elif not lazy_output and is_lazy:
        result = compute(result, show_progressbar=show_progressbar)
    if not inplace:
        out = signal_like(signal, result, signal_type=signal_type, title=title)
        out.metadata.set_item(record_path, record)
        return out
    if lazy_output and validate is not None:
        validate()
    signal.data = result
    if signal.metadata.has_item("Signal.Noise_properties.variance"):
        del signal.metadata.Signal.Noise_properties.variance
    signal.metadata.General.title = title
    signal.metadata.set_item(record_path, record)
    if signal_type is not None and signal.metadata.Signal.get_item("signal_type") != signal_type:
        signal.set_signal_type(signal_type)
    return None


def variance_model(signal):
    """HyperSpy's Poisson variance model from the metadata, if any (dose/gain known)."""
    vm = signal.metadata.get_item("Signal.Noise_properties.Variance_linear_model")
    if vm is None:
        return None
    d = vm.as_dictionary()
    if "gain_factor" not in d:
        return None
    return {"gain_factor": float(d["gain_factor"]), "gain_offset": float(d.get("gain_offset", 0.0))}


def noise_source(signal):
    """How the measurements' noise level is known: ``(kind, parameters)``.

    ``("variance model", {"gain_factor", "gain_offset"})`` from HyperSpy's
    ``Noise_properties.Variance_linear_model``; ``("simulation", {"dose",
    "detector_sigma"})`` from a :func:`~hyperspy_partialscan.to_partial_scan`
    record; ``("estimated", {})`` otherwise (blind).

    Examples
    --------
    >>> import hyperspy.api as hs, numpy as np
    >>> from hyperspy_partialscan._signal_tools import noise_source
    >>> s = hs.signals.Signal2D(np.ones((4, 4)))
    >>> noise_source(s)
    ('estimated', {})
    >>> s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 2.0)
    >>> noise_source(s)
    ('variance model', {'gain_factor': 2.0, 'gain_offset': 0.0})
    """
    vm = variance_model(signal)
    if vm is not None:
        return "variance model", vm
    noise = signal.metadata.get_item("Signal.Partial_scan.noise")
    if noise is not None:  # simulated: the noise is known, zero for a clean simulation
        noise = noise.as_dictionary() if hasattr(noise, "as_dictionary") else dict(noise)
        return "simulation", {"dose": noise.get("dose"), "detector_sigma": float(noise.get("detector_sigma") or 0)}
    return "estimated", {}
