"""Helpers shared by the hyperspy_partialscan tests: test signals and comparisons."""

import numpy as np

#: names, units, scales and offsets given to the axes of test signals (navigation first,
#: in HyperSpy's natural order within each group)
NAV_AXES = [("tilt", "deg", 2.0, -10.0), ("time", "s", 0.5, 3.0)]
SIG_AXES = [("x", "nm", 0.25, 1.5), ("y", "nm", 0.3, -2.0)]


def smooth_image(shape=(64, 64), seed=0):
    """A smooth, positive test image (sum of broad Gaussians and a gentle ramp), float32."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = 0.2 + 0.3 * yy / h + 0.1 * xx / w
    for _ in range(6):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(0.1, 0.3) * min(h, w)
        img += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return img.astype(np.float32)


def make_signal(nav_shape=(), lazy=False, size=64, seed=0, dtype=np.float32):
    """A Signal2D stack of smooth images with named axes, metadata and original_metadata.

    Parameters
    ----------
    nav_shape : tuple of int
        Navigation shape in numpy order.
    lazy : bool
        Return a lazy signal.
    size : int or tuple of int
        Frame size.
    seed : int
        Seed of the images (each frame differs).
    dtype : numpy dtype
        Data type.
    """
    import hyperspy.api as hs

    shape = (size, size) if np.isscalar(size) else tuple(size)
    n = int(np.prod(nav_shape)) if nav_shape else 1
    frames = [smooth_image(shape, seed + i) for i in range(n)]
    data = np.stack(frames).reshape(tuple(nav_shape) + shape).astype(dtype)
    s = hs.signals.Signal2D(data)
    nav_axes = s.axes_manager.navigation_axes
    for ax, (name, units, scale, offset) in zip(nav_axes, NAV_AXES):
        ax.name, ax.units, ax.scale, ax.offset = name, units, scale, offset
    for ax, (name, units, scale, offset) in zip(s.axes_manager.signal_axes, SIG_AXES):
        ax.name, ax.units, ax.scale, ax.offset = name, units, scale, offset
    s.metadata.General.title = "specimen"
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 200.0)
    s.metadata.set_item("Acquisition_instrument.TEM.Detector.name", "HAADF")
    s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 2.5)
    s.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset", 0.1)
    s.original_metadata.set_item("Vendor.Session.operator", "test")
    s.original_metadata.set_item("Vendor.Session.dwell_us", 2.5)
    return s.as_lazy() if lazy else s


def array_of(signal_or_data):
    """The (computed) numpy data of a signal or array."""
    d = signal_or_data.data if hasattr(signal_or_data, "axes_manager") else signal_or_data
    return np.asarray(d.compute() if hasattr(d, "compute") else d)


def axes_summary(signal):
    """(name, units, scale, offset, size, navigate) of every axis."""
    return [
        (a.name, a.units, float(a.scale), float(a.offset), a.size, a.navigate)
        for a in signal.axes_manager._axes
    ]


def _equal(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if hasattr(a, "compute"):
        a = a.compute()
    if hasattr(b, "compute"):
        b = b.compute()
    if isinstance(a, (np.ndarray, list, tuple)) or isinstance(b, (np.ndarray, list, tuple)):
        try:
            return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
        except TypeError:
            return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating)):
        return a == b or (np.isnan(a) and np.isnan(b))
    return a == b


def assert_tree_equal(a, b):
    """Assert two metadata dictionaries are equal (numpy arrays and scalars compared by value)."""
    a = a.as_dictionary() if hasattr(a, "as_dictionary") else a
    b = b.as_dictionary() if hasattr(b, "as_dictionary") else b
    assert _equal(a, b), f"{a!r}\n!=\n{b!r}"


def metadata_without_partial_scan(signal):
    """The metadata dictionary without what the package writes (partial-scan record, signal type, title)."""
    md = signal.metadata.as_dictionary()
    sig = dict(md.get("Signal", {}))
    sig.pop("Partial_scan", None)
    sig.pop("signal_type", None)
    md["Signal"] = sig
    general = dict(md.get("General", {}))
    general.pop("title", None)
    md["General"] = general
    return md


def snapshot(signal):
    """Everything of a signal that an operation must leave alone."""
    return {
        "class": type(signal),
        "data": array_of(signal).copy(),
        "dtype": signal.data.dtype,
        "data_id": id(signal.data),
        "metadata": signal.metadata.as_dictionary(),
        "original_metadata": signal.original_metadata.as_dictionary(),
        "axes": axes_summary(signal),
    }


def assert_unchanged(signal, snap):
    """Assert ``signal`` still matches ``snapshot`` (class, data, metadata, axes)."""
    assert type(signal) is snap["class"]
    assert id(signal.data) == snap["data_id"]
    assert signal.data.dtype == snap["dtype"]
    np.testing.assert_array_equal(array_of(signal), snap["data"])
    assert_tree_equal(signal.metadata, snap["metadata"])
    assert_tree_equal(signal.original_metadata, snap["original_metadata"])
    assert axes_summary(signal) == snap["axes"]
