#!/usr/bin/env bash
# Here (not on the device): fetch the onnxruntime-gpu wheel for the device's Python 3.12 and
# cut it into pieces that fit one device call each (a call carries at most 64 MiB with the
# working tree). run_all.sh's setup part joins them, checks the sha256 and installs the
# wheel with --target (no network there). See bench/device/README.md for the call sequence.
#
#   bash bench/device/ort_pieces.sh [VERSION] [EXISTING_WHEEL]
set -eu
cd "$(dirname "$0")/../.."
VERSION=${1:-1.31.1}
WHEEL=${2:-}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p .whl/ort
if [ -z "$WHEEL" ]; then
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 -d .whl/download "onnxruntime-gpu==$VERSION"
  WHEEL=$(ls .whl/download/onnxruntime_gpu-"$VERSION"-*.whl)
fi
name=$(basename "$WHEEL")
rm -f .whl/ort/*
(cd "$(dirname "$WHEEL")" && sha256sum "$name") >.whl/ort/SHA256SUMS
split -b 56M "$WHEEL" ".whl/ort/$name.part-"   # 56 MiB each: aa, ab, ... (the last is smaller)
rm -rf .whl/download
ls -l .whl/ort
