"""hyperspy_partialscan: partial-scan simulation, completion and denoising for HyperSpy.

Public API
----------
to_partial_scan, as_partial_scan, from_scan_positions
    Create partial scans (NaN = unsampled pixels).
adaptive_scan
    Scan adaptively: the data decide where the probe goes next (simulated or real microscope).
complete_partial_scan
    Fill the unsampled pixels (trained generator or classical methods).
denoise, fit_denoiser
    Denoise frames (trained network, classical filters, PCA) and fine-tune the
    denoiser on your own noisy data without clean references.
plot_scan_path, plot_completion
    Draw the ordered probe path over an image; a partial scan, its completion
    and the completion's per-pixel uncertainty side by side.
list_models, load_model
    Shipped and user-trained networks.
NoiseModel, generate_path, path_names
    The scan simulator's building blocks.
metrics, specimens
    Image-quality measures (blurred target, RMSE, PSNR) and synthetic specimens.
"""

from . import metrics, specimens
from ._version import __version__
from .adaptive import adaptive_scan
from .completion import COMPLETION_METHODS, complete_partial_scan
from .conversion import as_partial_scan, from_scan_positions, to_partial_scan
from .denoising import DENOISING_METHODS, denoise, fit_denoiser
from .models import list_models, load_model
from .paths import generate_path, path_names
from .plotting import plot_completion, plot_scan_path
from .simulate import NoiseModel

__all__ = [
    "__version__",
    "metrics",
    "specimens",
    "to_partial_scan",
    "as_partial_scan",
    "from_scan_positions",
    "complete_partial_scan",
    "adaptive_scan",
    "COMPLETION_METHODS",
    "denoise",
    "fit_denoiser",
    "DENOISING_METHODS",
    "plot_scan_path",
    "plot_completion",
    "list_models",
    "load_model",
    "NoiseModel",
    "generate_path",
    "path_names",
]
