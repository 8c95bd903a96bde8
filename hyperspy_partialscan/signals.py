"""The ``partial_scan`` signal type: :class:`PartialScan2D` and :class:`LazyPartialScan2D`.

A partial scan is an image whose unsampled pixels are NaN (float32); a full scan
is a partial scan with nothing missing. There is no side-car mask, so slicing,
stacking, saving and lazy evaluation need nothing special.
"""

from __future__ import annotations

import numpy as np
from hyperspy.signals import LazySignal2D, Signal2D

from ._signal_tools import signal_like

__all__ = ["PartialScan2D", "LazyPartialScan2D"]


class PartialScan2D(Signal2D):
    """Images scanned partially: unsampled pixels are NaN.

    Create one with :func:`hyperspy_partialscan.to_partial_scan` (simulated),
    :func:`hyperspy_partialscan.as_partial_scan` (dense acquisitions with zeros
    at unscanned positions), :func:`hyperspy_partialscan.from_scan_positions`,
    or ``s.set_signal_type("partial_scan")``.
    """

    _signal_type = "partial_scan"
    # as in hyperspy_extension.yaml: HyperSpy rewrites an alias in the metadata to
    # the signal type only when the class declares its aliases
    _alias_signal_types = ["PartialScan", "partial scan"]

    @property
    def scan_mask(self):
        """Boolean signal, True where a pixel was sampled (lazy when the signal is lazy)."""
        xp = self._xp()
        title = self.metadata.General.title
        return signal_like(self, xp.isfinite(self.data), signal_type="", keep_noise_model=False,
                           title=f"Scan mask of {title}" if title else "Scan mask")

    @property
    def coverage(self):
        """Fraction of sampled pixels over the whole signal (computed for lazy signals)."""
        xp = self._xp()
        c = xp.isfinite(self.data).mean()
        return float(c.compute() if hasattr(c, "compute") else c)

    def _xp(self):
        if self._lazy:
            import dask.array as da

            return da
        return np

    def to_partial_scan(self, path="spiral", coverage=0.05, *, seed=None, noise=None, vary_per_frame=False,
                        batch_size=16, lazy_output=None, show_progressbar=None, **path_options):
        """Simulate a partial scan of these (full) frames.

        See :func:`hyperspy_partialscan.to_partial_scan` for the parameters.
        """
        from .conversion import to_partial_scan

        return to_partial_scan(self, path, coverage, seed=seed, noise=noise, vary_per_frame=vary_per_frame,
                               batch_size=batch_size, lazy_output=lazy_output, show_progressbar=show_progressbar,
                               **path_options)

    def complete_partial_scan(self, method="generator", *, model=None, batch_size=None, device=None, precision=None,
                              keep_measured=False, tile_size=512, inplace=False, lazy_output=None,
                              show_progressbar=None):
        """Fill the unsampled pixels.

        See :func:`hyperspy_partialscan.complete_partial_scan` for the parameters.
        """
        from .completion import complete_partial_scan

        return complete_partial_scan(self, method, model=model, batch_size=batch_size, device=device,
                                     precision=precision, keep_measured=keep_measured, tile_size=tile_size,
                                     inplace=inplace, lazy_output=lazy_output, show_progressbar=show_progressbar)

    def plot_scan_path(self, ax=None, *, max_points=20000, cmap="gray", line_color="tab:orange", **kwargs):
        """Draw the ordered probe path over the current frame.

        See :func:`hyperspy_partialscan.plot_scan_path`.
        """
        from .plotting import plot_scan_path

        return plot_scan_path(self, ax=ax, max_points=max_points, cmap=cmap, line_color=line_color, **kwargs)


    def denoise(self, method="generator", *, model=None, batch_size=None, device=None, precision=None, sigma=None,
                n_components=None, inplace=False, lazy_output=None, show_progressbar=None, **method_params):
        """Denoise the (complete) frames.

        See :func:`hyperspy_partialscan.denoise` for the parameters. Partial
        scans must be completed first: ``s.complete_partial_scan().denoise()``.
        """
        from .denoise import denoise

        return denoise(self, method, model=model, batch_size=batch_size, device=device, precision=precision,
                       sigma=sigma, n_components=n_components, inplace=inplace, lazy_output=lazy_output,
                       show_progressbar=show_progressbar, **method_params)


class LazyPartialScan2D(LazySignal2D, PartialScan2D):
    """Lazy version of :class:`PartialScan2D`."""

    _lazy = True
