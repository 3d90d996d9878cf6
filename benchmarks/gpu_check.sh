#!/usr/bin/env bash
# GPU figures for `repa-study sweep estimate` in one short run (<= 8 minutes on one GPU); prints one JSON object:
# SiT-B/2, -L/2, -XL/2 x REPA/iREPA (idealised step and the real training loop), an encoder of each size class up to
# the 7B (random init, built on the GPU), sampling (TF32 and bf16), the SD-VAE decoder, Inception, scoring's encoder.
#   benchmarks/gpu_check.sh            # on the GPU: writes jobs/cost/calibration/<gpu>.json (the estimate reads it)
#   benchmarks/gpu_check.sh --dry-run                             # tiny sizes on CPU: checks the script only
# The JSON is rewritten after every configuration, so a timeout loses nothing. The schema is in
# benchmarks/gpu_check.py's docstring. Not used by any test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# configurations stop starting at 420 s; the hard stop leaves a minute for the one in flight
exec timeout --signal=INT 480 "$PY" benchmarks/gpu_check.py --budget-s 420 "$@"
