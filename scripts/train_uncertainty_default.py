"""Train and calibrate the shipped uncertainty model of ``completion_default``.

The `train` split of the sample data is divided by file: about every fifth file is held out for the
calibration (chosen by a stable hash of its name), the rest (plus synthetic lattices and nanoparticle
fields, as for the generator's last stage) trains the network. The `val` split is never touched;
benchmarks/eval_uncertainty.py reports on it.

    python scripts/train_uncertainty_default.py [--data ../shared/data] [--out runs/uncertainty_default]
        [--minutes 45] [--resume]

Stage 1 (50 min, 3,787 iterations) ran with the defaults against the first ``completion_default``;
stage 2 is a fresh, narrower network with the global-context branch on the errors of the generator
fine-tuned on adaptive-style masks:

    python scripts/train_uncertainty_default.py --generator NEW_GENERATOR.safetensors --width 12 --context \
        --adaptive-fraction 0.35 --minutes 35 --out runs/uncertainty_s2

Stage 3 fine-tunes stage 2 at half resolution (the network on 2x2 block means):

    python scripts/train_uncertainty_default.py --init runs/uncertainty_s2/uncertainty_default.safetensors \
        --downscale 2 --width 12 --context --adaptive-fraction 0.35 --minutes 30 --lr 3e-4 --out runs/unc_ds2

Stage 4 (shipped) fine-tunes stage 3 on the errors of generator v2 (scripts/train_completion_default.sh):

    python scripts/train_uncertainty_default.py --init runs/unc_ds2/uncertainty_default.safetensors \
        --generator runs/completion_default/s6/completion_default.safetensors --downscale 2 --width 12 \
        --context --adaptive-fraction 0.35 --minutes 20 --lr 1.5e-4 --seed 4 --out runs/unc_v2

The result is OUT/uncertainty_default.safetensors (+ .json), calibrated; to ship it, copy both files
to hyperspy_partialscan/models/weights/.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from hyperspy_partialscan.io import manifest_frames
from hyperspy_partialscan.training import calibrate_uncertainty, train_uncertainty, training_frames


def _held_out(label):
    """Every fifth file (by a stable hash of its name) calibrates instead of training."""
    name = label.split("[")[0]
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 5 == 0


def _at_most_per_file(rows, n):
    """At most ``n`` frames (evenly spaced) of each file, as the generator's training takes them."""
    by_file = {}
    for label, f in rows:
        by_file.setdefault(label.split("[")[0], []).append((label, f))
    out = []
    for frames in by_file.values():
        keep = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))
        out += [frames[k] for k in keep]
    return out


def split_frames(data, labelled=False):
    """(training frames, calibration frames) of the `train` split: at most 8 frames per file, the held-out files
    calibrate. ``labelled``: (label, frame) pairs instead of frames."""
    rows = _at_most_per_file(manifest_frames(data, "train"), 8)
    split = [row for row in rows if not _held_out(row[0])], [row for row in rows if _held_out(row[0])]
    return split if labelled else tuple([f for _, f in part] for part in split)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="runs/uncertainty_default")
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--synthetic", type=int, default=32)
    ap.add_argument("--lattices", type=int, default=0, help="more generated atomic lattices (the generator's option)")
    ap.add_argument("--lattice-spacing", type=float, nargs=2, default=(20.0, 35.0), metavar=("LOW", "HIGH"),
                    help="their lattice constants, log-uniform (px)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init", default=None, help="fine-tune this uncertainty model")
    ap.add_argument("--generator", default=None, help="the completion model whose errors are learnt (default: shipped)")
    ap.add_argument("--adaptive-fraction", type=float, default=0.0, help="crops with adaptive-style scan paths")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="training crops and noise (change it when fine-tuning again)")
    ap.add_argument("--context", action="store_true", help="a fresh network gets the global-context branch")
    ap.add_argument("--downscale", type=int, default=1, help="the network runs on NxN block means of its inputs")
    ap.add_argument("--crop-level-weight", type=float, default=0.0,
                    help="weight of the loss's crop-level term (each crop's predicted vs actual mean squared error)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--calibrate-only", action="store_true", help="recalibrate OUT/uncertainty_default (no training)")
    a = ap.parse_args(argv)
    fit, calib = split_frames(a.data)
    fit += training_frames([], synthetic=a.synthetic, seed=7, lattices=a.lattices,
                           lattice_spacing=tuple(a.lattice_spacing))
    generated = a.synthetic + a.lattices
    print(f"{len(fit)} training frames ({generated} generated), {len(calib)} calibration frames")
    out = Path(a.out)
    path = out / "uncertainty_default.safetensors"
    description = {"train_split_frames_minus_held_out": len(fit) - generated, "synthetic": a.synthetic, "crop": a.crop}
    if a.lattices:
        description |= {"lattices": a.lattices, "lattice_spacing": list(a.lattice_spacing)}
    if not a.calibrate_only:
        path = train_uncertainty(fit, out, iterations=a.iterations, batch_size=a.batch_size, crop=a.crop, width=a.width,
                                 init=a.init, generator=a.generator, adaptive_fraction=a.adaptive_fraction, lr=a.lr,
                                 context=a.context, downscale=a.downscale, seed=a.seed,
                                 crop_level_weight=a.crop_level_weight,
                                 threads=a.threads, val_frames=calib[:8], resume=a.resume, overwrite=a.overwrite,
                                 max_seconds=a.minutes * 60, name="uncertainty_default", show_progressbar=False,
                                 data_description=description)
        print("trained:", path)
    path = calibrate_uncertainty(path, calib, generator=a.generator,
                                 data_description={"train_split_held_out_frames": len(calib)})
    print("calibrated:", path)
    print("global scale", np.round(__import__("json").loads(Path(path).with_suffix(".json").read_text())
                                   ["calibration"]["global"], 3))


if __name__ == "__main__":
    main()
