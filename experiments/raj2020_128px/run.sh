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
    --attack-steps 100 --restarts 2 --verify 2 --verify-steps 300 --verify-restarts 3 --extend 0 \
    --models "$MODELS" --seed "$seed" --no-progress --out "$OUT/seed$seed" > "$OUT/seed$seed.log" 2>&1 &
done
wait
# TV (its weight chosen on validation phantoms at the dose: tuning/tv.json) in folders of its own: the same attack
# without the verification, whose 4500 passes of 100 differentiated Chambolle-Pock iterations per seed would take
# ~4 hours on one core at 128 px (TV=0 skips it)
FOLDERS=() EXTRA=()
for seed in $SEEDS; do FOLDERS+=("$OUT/seed$seed"); done
if [ "${TV:-1}" = 1 ]; then
  for seed in $SEEDS; do
    ctrobust benchmark --protocol raj2020 --size 128 --channels 16 --depth 3 --steps 1500 --n-samples 8 \
      --attack-steps 100 --restarts 2 --verify 0 --extend 0 --models tv --seed "$seed" --no-progress \
      --out "$OUT/tv-seed$seed" > "$OUT/tv-seed$seed.log" 2>&1 &
    EXTRA+=(--extra "$OUT/tv-seed$seed")
  done
  wait
fi
# Learned Primal-Dual (10 iterations, 32 channels) in folders of its own, the same budget as TV's: a pass costs
# ~0.4 s per sample on one core, so the verification (9000 sample-passes per seed) would add ~1-2 hours per seed
# to the ~52-minute attack (LPD=0 skips it)
if [ "${LPD:-1}" = 1 ]; then
  for seed in $SEEDS; do
    ctrobust benchmark --protocol raj2020 --size 128 --channels 16 --depth 3 --steps 1500 --n-samples 8 \
      --attack-steps 100 --restarts 2 --verify 0 --extend 0 --models lpd-plain --seed "$seed" --no-progress \
      --out "$OUT/lpd-seed$seed" > "$OUT/lpd-seed$seed.log" 2>&1 &
    EXTRA+=(--extra "$OUT/lpd-seed$seed")
  done
  wait
fi
python -m experiments.raj2020_128px.table "${FOLDERS[@]}" "${EXTRA[@]}" --out "$OUT/combined"
# issue 25's 128 px check (one seed): min-max with the per-sample `memory` adversary, trained with the protocol's
# settings by `ctrobust train` and added to seed 0's leaderboard as a --checkpoint row (MEMORY=0 skips it)
if [ "${MEMORY:-1}" = 1 ]; then
  run="$OUT/minmax-memory-seed0"
  [ -f "$run/best.pt" ] || ctrobust train --protocol raj2020 --size 128 --channels 16 --depth 3 --objective minmax \
    --adversary-mode memory --max-steps 1500 --seed 0 --save-every 75 --no-progress --out "$run" > "$run.log" 2>&1
  ctrobust benchmark --protocol raj2020 --size 128 --channels 16 --depth 3 --steps 1500 --n-samples 8 \
    --attack-steps 100 --restarts 2 --verify 2 --verify-steps 300 --verify-restarts 3 --extend 0 --models "$MODELS" \
    --checkpoint fbpconvnet-minmax-memory="$run/best.pt" --seed 0 --no-progress --out "$OUT/seed0" >> "$OUT/seed0.log" 2>&1
  python -m experiments.raj2020_128px.table "${FOLDERS[@]}" "${EXTRA[@]}" --out "$OUT/combined"
fi
