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
# On 2 cores, one sitting (STAGE=pipeline): the methods train one after another on core 0 while
# core 1 measures fid5k of each kept checkpoint as it appears (bench_gans.py --follow); once the
# last training ends, core 0 helps with the newest checkpoints. Each finished method's EMA
# generators are copied (small) to benchmarks/results/gan_table_<dataset>/generators/<method>, so a
# later session can still measure them after runs/ is gone:
#   STAGE=pipeline METHODS="pigan cips3d" bash benchmarks/run_gan_table.sh celeba
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
OUT=${OUT_DIR:-benchmarks/runs/table_$(basename "$DATASET")}
KEEP=${KEEP_DIR:-benchmarks/results/gan_table_$(basename "$DATASET")/generators}
mkdir -p "$OUT"
if [ "$DATA" = synth ]; then  # generate the shared synthetic set once, not once per process
  SYNTH="$OUT/synth_objects"
  [ -f "$SYNTH/labels.json" ] || $PY -m aware3d.cli data synth objects "$SYNTH" --count 2000 \
      --resolution 64 --objects 1-2
  DATA=$SYNTH
fi
if [ "$STAGE" = pipeline ]; then
  [ "$FID_N" -gt 0 ] || { echo "STAGE=pipeline needs FID_N > 0"; exit 2; }
  CT=${CORE_TRAIN:-0}; CF=${CORE_FID:-1}
  FOL=(--data "$DATA" --fid-n "$FID_N" --fid-real "$FID_REAL" --points "$(echo $AT | wc -w)" --threads 1)
  ( for m in $METHODS; do   # core CORE_FID (1): FID of each checkpoint as it appears, oldest first
      echo "$(date +%T) core $CF follows $m ($OUT/$m.fid.log)"
      taskset -c "$CF" $PY benchmarks/bench_gans.py --follow "$OUT/$m" --methods "$m" "${FOL[@]}" \
          >> "$OUT/$m.fid.log" 2>&1
    done ) &
  follower=$!
  for m in $METHODS; do     # core CORE_TRAIN (0): the trainings, one after another
    echo "$(date +%T) train $m on core $CT -> $OUT/$m ($OUT/$m.log)"
    taskset -c "$CT" $PY benchmarks/bench_gans.py --methods "$m" --train "$m" --data "$DATA" \
        --at $AT --fid-n 0 --fid-real "$FID_REAL" --defer-fid --threads 1 --reps 2 \
        --out "$OUT/$m" > "$OUT/$m.log" 2>&1
  done
  for m in $(echo $METHODS | tr ' ' '\n' | tac); do  # the training core joins in, newest checkpoints first
    taskset -c "$CT" $PY benchmarks/bench_gans.py --follow "$OUT/$m" --methods "$m" --newest-first \
        "${FOL[@]}" >> "$OUT/$m.fid0.log" 2>&1
  done
  wait "$follower"
  for m in $METHODS; do
    $PY benchmarks/bench_gans.py --refid "$OUT/$m" --out "$OUT/$m" --fid-n "$FID_N" \
        --fid-real "$FID_REAL" --threads 1 >> "$OUT/$m.fid.log" 2>&1   # measured points: reused
    $PY benchmarks/bench_gans.py --keep-generators "$OUT/$m" "$KEEP/$m"
  done
  STAGE=done
fi
core=0
pids=()
for m in $METHODS; do
  [ "$STAGE" = done ] && break
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
