#!/usr/bin/env bash
# Learned Primal-Dual vs FBPConvNet under the strong attack (docs/training.md, "Learned Primal-Dual").
# Usage: OUT=runs/lpd_vs_fbpconvnet LPD_OBJECTIVES=plain bash experiments/lpd_vs_fbpconvnet/run.sh   (the demo's geometry)
#        OUT=runs/lpd32 SIZE=32 ANGLES=30 N_SAMPLES=4 PARALLEL=1 bash experiments/lpd_vs_fbpconvnet/run.sh   (the first look)
# The demo's training (150 steps, batch 8, seed 0, U-Net 16 channels / depth 3, min-max eps 0.01 lambda 0.5),
# and LPD started at FBP (plain), then `ctrobust attack --restarts 2 --steps 300` (ATTACK_STEPS) on the four checkpoints and FBP, then the step timings.
set -euo pipefail
OUT=${OUT:-runs/lpd_vs_fbpconvnet}
SIZE=${SIZE:-64}
ANGLES=${ANGLES:-143}
STEPS=${STEPS:-150}
N_SAMPLES=${N_SAMPLES:-8}
ATTACK_STEPS=${ATTACK_STEPS:-300}
EXTEND=${EXTEND:-0}  # the attack's continuations (ctrobust attack --extend): the observed runs predate them
THREADS=${THREADS:-1}
LPD_OBJECTIVES=${LPD_OBJECTIVES:-plain minmax}  # objectives of the zero-start LPD (the paper's, --model lpd)
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
mkdir -p "$OUT"
# the step timings at the demo setting (64 px, 143 views) and at this run's, first (they take a minute)
[ -f "$OUT/step_time_64px_143views.csv" ] || python -m experiments.lpd_vs_fbpconvnet.timing --size 64 --angles 143 --out "$OUT/step_time_64px_143views.csv"
common=(--size "$SIZE" --angles "$ANGLES" --max-steps "$STEPS" --seed 0 --no-progress)
for model in fbpconvnet lpd; do
  objectives="plain minmax"; [ "$model" = lpd ] && objectives=$LPD_OBJECTIVES
  for objective in $objectives; do
    run="$OUT/${model}_${objective}"
    [ -f "$run/best.pt" ] && continue
    start=$(date +%s)
    unet=(); [ "$model" = fbpconvnet ] && unet=(--channels 16 --depth 3)
    ctrobust train --model "$model" --objective "$objective" --eps 0.01 "${common[@]}" "${unet[@]}" --out "$run" --force
    echo "$model,$objective,$(( $(date +%s) - start ))" >> "$OUT/train_wall_s.csv"
  done
done
attack() {  # attack OUT_NAME CHECKPOINT... [extra flags]
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] && return 0
  ctrobust attack "$@" --eps-grid 0,0.01,0.02,0.04 --restarts 2 --steps "$ATTACK_STEPS" --extend "$EXTEND" \
    --n-samples "$N_SAMPLES" --seed 0 --no-progress --out "$OUT/$name" --force > "$OUT/$name.log" 2>&1
}
# LPD started at FBP (init="fbp", zero-initialised last layers: the untrained network is FBP, as FBPConvNet is),
# plain objective
if [ ! -f "$OUT/lpdfbp_plain/best.pt" ]; then
  start=$(date +%s)
  ctrobust train --model lpd --model-option init=fbp --model-option zero_init=true --objective plain \
    --size "$SIZE" --angles "$ANGLES" --max-steps "$STEPS" --seed 0 --no-progress --out "$OUT/lpdfbp_plain" --force
  echo "lpdfbp,plain,$(( $(date +%s) - start ))" >> "$OUT/train_wall_s.csv"
fi
# four attack processes (PARALLEL=1 runs them side by side; same seeds, so the same numbers either way)
bg() { if [ "${PARALLEL:-0}" = 1 ]; then "$@" & else "$@"; fi; }
bg attack attack_fbpconvnet --checkpoint "$OUT/fbpconvnet_plain/best.pt" --checkpoint "$OUT/fbpconvnet_minmax/best.pt"
bg attack attack_lpdfbp_plain --checkpoint "$OUT/lpdfbp_plain/best.pt" --no-fbp
for objective in $LPD_OBJECTIVES; do
  bg attack "attack_lpd_$objective" --checkpoint "$OUT/lpd_$objective/best.pt" --no-fbp
done
wait
[ -f "$OUT/step_time.csv" ] || python -m experiments.lpd_vs_fbpconvnet.timing --size "$SIZE" --angles "$ANGLES" --out "$OUT/step_time.csv"
