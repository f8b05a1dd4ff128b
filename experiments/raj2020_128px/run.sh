#!/usr/bin/env bash
# The seed paper's protocol (raj2020) at 128 px, two seeds: docs/benchmark.md, "The 128 px study".
# Usage: OUT=runs/raj2020_128px SEEDS="0 1" bash experiments/raj2020_128px/run.sh
# Each seed is one `ctrobust benchmark` folder (resumable: run the same command again after a kill), run one
# process per seed side by side with one thread each; then table.py combines the two leaderboards.
set -euo pipefail
OUT=${OUT:-runs/raj2020_128px}
SEEDS=${SEEDS:-0 1}
MODELS=${MODELS:-fbp,fbpconvnet-plain,fbpconvnet-minmax,fbpconvnet-pgd}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
mkdir -p "$OUT"
for seed in $SEEDS; do
  ctrobust benchmark --protocol raj2020 --size 128 --channels 16 --depth 3 --steps 1500 --n-samples 8 \
    --attack-steps 100 --restarts 2 --verify 2 --verify-steps 300 --verify-restarts 3 \
    --models "$MODELS" --seed "$seed" --no-progress --out "$OUT/seed$seed" > "$OUT/seed$seed.log" 2>&1 &
done
wait
python -m experiments.raj2020_128px.table "$OUT"/seed* --out "$OUT/combined"
