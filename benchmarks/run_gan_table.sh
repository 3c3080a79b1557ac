#!/usr/bin/env bash
# The five-GAN FID table: every method trained on one dataset for the same wall clock, one process
# per method, N_PARALLEL at a time, each pinned to its own core (1 thread), FID measured after
# training on the kept 15/30/60-minute checkpoints, then one merged table and plot.
#
#   bash benchmarks/run_gan_table.sh celeba                # ../shared/data/celeba_10k
#   bash benchmarks/run_gan_table.sh synth                 # data synth objects (generated once)
#   METHODS="graf pigan" AT="15 30 60" FID_N=5000 bash benchmarks/run_gan_table.sh celeba
#
# Training and FID can run in different sittings (one method-hour of training plus ~17 core-minutes
# of Inception per fid5k point on one CPU core):
#   FID_N=0 METHODS="graf pigan" bash benchmarks/run_gan_table.sh celeba   # train, keep checkpoints
#   STAGE=fid bash benchmarks/run_gan_table.sh celeba   # fid5k on every kept point, then the table
# The FID stage rewrites <method>/results.json after every point and skips the points it already
# has, so an interrupted FID stage continues where it stopped.
#
# Output: benchmarks/runs/table_<dataset>/<method>/ (results.json, sample grids) and the merged
# benchmarks/runs/table_<dataset>/all/{table.md,fid_vs_minutes.png}. Logs: <method>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-celeba}
METHODS=${METHODS:-"giraffe graf pigan hologan cips3d"}
AT=${AT:-"15 30 60"}
FID_N=${FID_N:-5000}
FID_REAL=${FID_REAL:-0}            # 0: the whole real set
N_PARALLEL=${N_PARALLEL:-$(nproc)}
STAGE=${STAGE:-train}              # train (then FID unless FID_N=0) | fid (only FID of kept points)
PY=${PY:-python}
case "$DATASET" in
  celeba) DATA=${DATA:-../shared/data/celeba_10k} ;;
  synth) DATA=synth ;;
  *) DATA=$DATASET ;;
esac
OUT=benchmarks/runs/table_$(basename "$DATASET")
mkdir -p "$OUT"
if [ "$DATA" = synth ]; then  # generate the shared synthetic set once, not once per process
  SYNTH="$OUT/synth_objects"
  [ -f "$SYNTH/labels.json" ] || $PY -m aware3d.cli data synth objects "$SYNTH" --count 2000 \
      --resolution 64 --objects 1-2
  DATA=$SYNTH
fi
core=0
pids=()
for m in $METHODS; do
  if [ "$STAGE" = fid ]; then
    [ -f "$OUT/$m/results.json" ] || { echo "no $OUT/$m/results.json: train $m first"; continue; }
    [ "$FID_N" -gt 0 ] || { echo "STAGE=fid needs FID_N > 0"; exit 2; }
    echo "$(date +%T) FID of $m's kept checkpoints on core $core ($OUT/$m.fid.log)"
    taskset -c "$core" $PY benchmarks/bench_gans.py --refid "$OUT/$m" --out "$OUT/$m" \
        --fid-n "$FID_N" --fid-real "$FID_REAL" --threads 1 >> "$OUT/$m.fid.log" 2>&1 &
  else
    echo "$(date +%T) start $m on core $core -> $OUT/$m ($OUT/$m.log)"
    taskset -c "$core" $PY benchmarks/bench_gans.py --methods "$m" --train "$m" --data "$DATA" \
        --at $AT --fid-n "$FID_N" --fid-real "$FID_REAL" --defer-fid --threads 1 --reps 2 \
        --out "$OUT/$m" > "$OUT/$m.log" 2>&1 &
  fi
  pids+=($!)
  core=$(( (core + 1) % N_PARALLEL ))
  if [ "${#pids[@]}" -ge "$N_PARALLEL" ]; then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
done
wait
folders=()
for m in $METHODS; do [ -f "$OUT/$m/results.json" ] && folders+=("$OUT/$m"); done
$PY benchmarks/bench_gans.py --merge "${folders[@]}" --out "$OUT/all"
