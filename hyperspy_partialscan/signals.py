"""The ``partial_scan`` signal type: :class:`PartialScan2D` and :class:`LazyPartialScan2D`.

A partial scan is an image whose unsampled pixels are NaN (float32); there is no
side-car mask, so slicing, stacking, saving and lazy evaluation need nothing
special. The signal methods are the package's functions bound to the signal:
their signatures and docstrings are generated from the functions
(:func:`~hyperspy_partialscan._docstrings.as_method`), so the two never drift.

Imports go one way: this module imports the signal-level modules, which never
import it.
"""

from __future__ import annotations

import numpy as np
from hyperspy.signals import LazySignal2D, Signal2D

from ._docstrings import as_method
from ._signal_tools import signal_like
from .completion import complete_partial_scan
from .conversion import to_partial_scan
from .denoising import denoise
from .plotting import UNSAMPLED_COLOUR, plot_scan_path

__all__ = ["PartialScan2D", "LazyPartialScan2D"]


class PartialScan2D(Signal2D):
    """Images scanned partially: unsampled pixels are NaN.

    Create one with :func:`hyperspy_partialscan.to_partial_scan` (simulated),
    :func:`hyperspy_partialscan.as_partial_scan` (dense acquisitions with
    unscanned positions marked by a mask or a value),
    :func:`hyperspy_partialscan.from_scan_positions`, or
    ``s.set_signal_type("partial_scan")``. Unsampled pixels are drawn in
    matplotlib's "bad" colour, distinct from any intensity.

    Examples
    --------
    >>> import hyperspy.api as hs
    >>> import hyperspy_partialscan as hps
    >>> s = hs.data.atomic_resolution_image()
    >>> p = hps.to_partial_scan(s, "spiral", coverage=0.1, seed=0, show_progressbar=False)
    >>> type(p).__name__, round(p.coverage, 2), p.scan_mask.data.dtype.name
    ('PartialScan2D', 0.1, 'bool')
    """

    _signal_type = "partial_scan"
    # as in hyperspy_extension.yaml: HyperSpy rewrites an alias in the metadata to
    # the signal type only when the class declares its aliases
    _alias_signal_types = ["PartialScan", "partial scan"]

    @property
    def scan_mask(self):
        """Boolean signal, True where a pixel was sampled (lazy when the signal is lazy)."""
        title = self.metadata.General.title
        return signal_like(self, self._xp().isfinite(self.data), signal_type="", keep_noise_model=False,
                           title=f"Scan mask of {title}" if title else "Scan mask")

    @property
    def coverage(self):
        """Fraction of sampled pixels over the whole signal (computed for lazy signals)."""
        c = self._xp().isfinite(self.data).mean()
        return float(c.compute() if hasattr(c, "compute") else c)

    def _xp(self):
        if self._lazy:
            import dask.array as da

            return da
        return np

    to_partial_scan = as_method(to_partial_scan)
    complete_partial_scan = as_method(complete_partial_scan)
    denoise = as_method(denoise)
    plot_scan_path = as_method(plot_scan_path)

    def plot(self, *args, **kwargs):
        """Plot as :meth:`hyperspy.signals.Signal2D.plot`; unsampled (NaN) pixels in a distinct colour."""
        super().plot(*args, **kwargs)
        _mark_unsampled(self)


def _mark_unsampled(signal):
    """Give the plotted image's colour map a 'bad' colour for NaN (unsampled) pixels."""
    plot = getattr(signal, "_plot", None)
    image = getattr(getattr(plot, "signal_plot", None), "ax", None)
    if image is None:
        return
    for im in image.get_images():
        cmap = im.get_cmap().copy()
        cmap.set_bad(UNSAMPLED_COLOUR)  # (plotting.UNSAMPLED_COLOUR)
        im.set_cmap(cmap)
    image.figure.canvas.draw_idle()




class LazyPartialScan2D(LazySignal2D, PartialScan2D):
    """Lazy version of :class:`PartialScan2D`."""

    _lazy = True
