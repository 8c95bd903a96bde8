#!/usr/bin/env bash
# Reproduce the shipped denoising_default: two training stages on the `train` split of the sample data
# (../shared/data by default), the second fine-tuning the first (docs/model.md). About 2.7 hours on
# 2 CPU cores; each stage checkpoints (rerun a stage with --resume added to continue it).
#
#   bash scripts/train_denoising_default.sh [DATA_DIR] [RUN_DIR]
#
# Stage 1 was trained by an earlier version of the package (each crop normalised by its own range,
# no contrast inversion: --context 1 --invert 0 reproduce that; its blind-noise half then used a
# single-sigma estimate), so a rerun gives a similar, not an identical, model. The result is
# RUN_DIR/s2/denoising_default.safetensors (+ .json); to ship it, copy both files to
# hyperspy_partialscan/models/weights/ and rerun benchmarks/eval_denoising.py.
set -euo pipefail
data=${1:-../shared/data}
runs=${2:-runs/denoising_default}
common=(-v train-denoiser "$data/train" --val "$data/val" --synthetic 24 --iterations 100000 --threads 2
        --name denoising_default --no-progressbar)

hyperspy-partialscan "${common[@]}" --max-minutes 100 --lr 1e-3 --invert 0 --context 1 --seed 0 --out "$runs/s1"
hyperspy-partialscan "${common[@]}" --max-minutes 60 --lr 3e-4 --invert 0.25 --context 4 --seed 4 \
    --init "$runs/s1/denoising_default.safetensors" --out "$runs/s2"
echo "model: $runs/s2/denoising_default.safetensors"
