"""Training and fine-tuning of the package's networks.

Modules
-------
loop
    The training loop shared by every network (:func:`fit_network`): schedule,
    ALRC, checkpoints, resume, validation log, divergence stop.
completion
    The completion generator's recipe (:func:`train_completion`).
denoising
    The supervised denoiser (:func:`train_denoiser`).
self_supervised
    Fine-tuning a denoiser on the user's own noisy frames
    (:func:`fit_self_supervised`, behind :func:`hyperspy_partialscan.fit_denoiser`).
uncertainty
    The completion's per-pixel uncertainty (:func:`train_uncertainty`,
    :func:`calibrate_uncertainty`).
risk
    Unbiased risk estimates (SURE for Gaussian noise, PURE for shot noise)
    used to fit and select denoisers without clean data.

Image-quality measures live in :mod:`hyperspy_partialscan.metrics`.
"""

from .completion import (
    TRAIN_PATHS,
    CropSampler,
    TrainConfig,
    huberised_mse,
    train_completion,
    validation_set,
)
from .denoising import NoisyCropSampler, denoising_validation_set, mse_per_item, train_denoiser
from .frames import training_frames
from .loop import ALRC, TrainingDiverged, export_checkpoint, fit_network, learning_rate, prepare_run, run_folder
from .risk import pure_per_item, sure_per_item
from .self_supervised import fit_self_supervised
from .uncertainty import calibrate_uncertainty, train_uncertainty

__all__ = [
    "TrainConfig",
    "TRAIN_PATHS",
    "ALRC",
    "huberised_mse",
    "CropSampler",
    "validation_set",
    "train_completion",
    "export_checkpoint",
    "fit_network",
    "learning_rate",
    "prepare_run",
    "run_folder",
    "TrainingDiverged",
    "NoisyCropSampler",
    "mse_per_item",
    "train_denoiser",
    "denoising_validation_set",
    "sure_per_item",
    "pure_per_item",
    "fit_self_supervised",
    "train_uncertainty",
    "calibrate_uncertainty",
    "training_frames",
]
