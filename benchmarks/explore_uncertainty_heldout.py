"""Exploration: compare uncertainty models on held-out `train` files, never the val split.

Choosing between two uncertainty networks on the val figures of ``eval_uncertainty.py`` would tune
for val. This script scores candidates the same way on the files that ``scripts/train_uncertainty_default.py``
holds out of the network's training (every fifth `train` file; the calibration's files): one 256²
crop per frame (a different seed from the calibration's crops), the five cases of ``eval_uncertainty.py``,
noise-free and at ``--dose`` with the dose known. Reported per model and case: fractions of errors within
sigma and 2 sigma, fraction of crops whose predicted RMSE is within ±25 % of the actual, the median over
crops of predicted / actual RMSE, block (32²) Spearman, and the training's own validation (Gaussian NLL
and within-sigma on the held-out crops of ``train_uncertainty``). ``--ensemble N`` averages log sigma over
N dihedral transforms of the network's input (identity, transpose, left-right and up-down flips), an
experiment not offered by the package.

    python benchmarks/explore_uncertainty_heldout.py MODEL [MODEL ...] [--ensemble 1] [--dose 100]
"""

from __future__ import annotations

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import eval_uncertainty as E
import numpy as np

_TRANSFORMS = (lambda x: x, lambda x: x.transpose(-1, -2), lambda x: x.flip(-1), lambda x: x.flip(-2))


def _with_ensemble(n):
    """Make every UncertaintyUNet average its log sigma over ``n`` dihedral transforms (each its own inverse)."""
    from hyperspy_partialscan.models.networks import UncertaintyUNet

    if not 1 <= n <= len(_TRANSFORMS):
        raise SystemExit(f"--ensemble must be 1 to {len(_TRANSFORMS)}, got {n}")
    single = UncertaintyUNet.forward
    UncertaintyUNet.forward = lambda self, x: sum(t(single(self, t(x))) for t in _TRANSFORMS[:n]) / n


def _held_out_frames(data_dir, labelled=False):
    """The calibration's frames (held-out `train` files); ``labelled``: (label, frame) pairs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from train_uncertainty_default import split_frames

    return split_frames(data_dir, labelled)[1]


def _training_validation(model, frames):
    """The validation ``train_uncertainty`` logs (same crops and settings), for this model."""
    import torch

    from hyperspy_partialscan.models import load_model
    from hyperspy_partialscan.training import uncertainty as T
    from hyperspy_partialscan.training.completion import TrainConfig

    unc = load_model(model, task="uncertainty")
    gen = load_model(unc.config["generator"]["name"], task="completion").on(torch.device("cpu"))
    t = unc.config["training"]  # the sampler settings the model was trained (and validated) with
    config = TrainConfig(crop=t["crop"], batch_size=t["batch_size"], noise_fraction=t["noise_fraction"],
                         seed=t["seed"], adaptive_fraction=t["adaptive_fraction"])
    return T._validation(unc.on(torch.device("cpu")), T.validation_batches(frames[:8], gen, config))


def main(argv=None):
    from hyperspy_partialscan.training.uncertainty import calibration_crops

    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="uncertainty models (names or .safetensors paths)")
    p.add_argument("--dose", type=float, default=100.0)
    p.add_argument("--ensemble", type=int, default=1)
    p.add_argument("--data", default=None, help="sample data folder (default: ../shared/data)")
    args = C.setup(p.parse_args(argv))
    _with_ensemble(args.ensemble)
    from hyperspy_partialscan.io import default_data_dir

    frames = _held_out_frames(args.data or default_data_dir())
    crops = calibration_crops(frames, crop=256, per_frame=1, seed=99)
    rows = []
    for model in args.models:
        per_crop = [E._crop_row(str(k), x, path, coverage, noise, args, None, model)[0] | {"model": model}
                    for k, x in enumerate(crops) for path, coverage in E.CASES for noise in ("clean", "dose_known")]
        for path, coverage in E.CASES:
            for noise in ("clean", "dose_known"):
                sel = [r for r in per_crop if r["path"] == path and r["coverage"] == round(coverage, 4)
                       and r["noise"] == noise]
                n = np.array([r["n"] for r in sel], float)
                ratio = np.array([r["rmse_predicted"] / r["rmse"] for r in sel])
                rows.append({"model": model, "path": path, "coverage": C.coverage_label(coverage), "noise": noise,
                             "crops": len(sel),
                             "within_sigma": float(np.average([r["within_1"] for r in sel], weights=n)),
                             "within_2sigma": float(np.average([r["within_2"] for r in sel], weights=n)),
                             "crops_rmse_within_25pct": C.within_25pct(ratio),
                             "rmse_ratio_median": float(np.median(ratio)),
                             "spearman_blocks": float(np.nanmean([r["spearman_blocks"] for r in sel]))})
        mine = [r for r in rows if r["model"] == model]
        print(f"{model}: mean block Spearman {np.mean([r['spearman_blocks'] for r in mine]):.3f}, crops within "
              f"±25 % {np.mean([r['crops_rmse_within_25pct'] for r in mine]):.3f}; training validation "
              f"{_training_validation(model, frames)}", flush=True)
    C.write_csv(rows, args.out / "explore_uncertainty_heldout.csv")
    print(C.markdown_table(rows))


if __name__ == "__main__":
    main()
