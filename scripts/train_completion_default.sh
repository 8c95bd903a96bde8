#!/usr/bin/env bash
# Reproduce the shipped completion_default: six training stages on the `train` split of the sample
# data (../shared/data by default), each fine-tuning the previous one (docs/model.md). About 6.9 hours
# on 2 CPU cores; every stage checkpoints (rerun a stage with --resume added to continue it).
#
#   bash scripts/train_completion_default.sh [DATA_DIR] [RUN_DIR]
#
# The result is RUN_DIR/s6/completion_default.safetensors (+ .json); to ship it, copy both files to
# hyperspy_partialscan/models/weights/, fine-tune and calibrate the uncertainty model on its errors
# (scripts/train_uncertainty_default.py, docs/model.md) and rerun benchmarks/eval_completion.py.
set -euo pipefail
data=${1:-../shared/data}
runs=${2:-runs/completion_default}
common=(-v train "$data/train" --val "$data/val" --iterations 30000 --name completion_default --no-progressbar)

hyperspy-partialscan "${common[@]}" --synthetic 24 --max-minutes 95 --threads 1 --out "$runs/s1"
hyperspy-partialscan "${common[@]}" --synthetic 64 --max-minutes 72 --threads 2 --lr 2e-4 --seed 2 \
    --init "$runs/s1/completion_default.safetensors" --out "$runs/s2"
hyperspy-partialscan "${common[@]}" --synthetic 96 --max-minutes 28 --threads 2 --lr 1e-4 --seed 3 \
    --init "$runs/s2/completion_default.safetensors" --out "$runs/s3"
# stage 4: a third of the crops scanned adaptively (issue 15), so adaptive scans complete in distribution
hyperspy-partialscan "${common[@]}" --synthetic 96 --max-minutes 55 --threads 2 --lr 1.5e-4 --seed 5 \
    --adaptive-fraction 0.35 --init "$runs/s3/completion_default.safetensors" --out "$runs/s4"
# generator v2, stage 3 (5): a non-local block at 1/8 resolution, grown as the identity; 192² crops, bfloat16
hyperspy-partialscan "${common[@]}" --synthetic 96 --max-minutes 95 --threads 2 --lr 1.5e-4 --seed 11 \
    --adaptive-fraction 0.35 --attention-heads 2 --crop 192 --batch-size 8 --bf16 \
    --init "$runs/s4/completion_default.safetensors" --out "$runs/s5"
# generator v2, stage 4 (6): 40 more atomic lattices with constants of 20-35 px (near the line spacing of
# scans at 1/20, where sparse samples alias a lattice), 256² crops
hyperspy-partialscan "${common[@]}" --synthetic 96 --lattices 40 --lattice-spacing 20 35 --max-minutes 70 \
    --threads 2 --lr 1e-4 --seed 12 --adaptive-fraction 0.35 --crop 256 --batch-size 6 --bf16 \
    --init "$runs/s5/completion_default.safetensors" --out "$runs/s6"
echo "model: $runs/s6/completion_default.safetensors"
