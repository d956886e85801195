#!/usr/bin/env bash
# Issue 15's speed evidence in one command, on the CPU (2 threads), each measurement printed as a
# ratio measured side by side in this sitting:
#   1. the authors' PyTorch code (scripts/authors_bench.py) then `lipctl bench`, for XS and S at
#      batch 64: lipctl's speed-up per method;
#   2. `cargo bench --bench speed`: end-of-epoch I/O at epoch 10 vs 1000, and `measure` vs `train`
#      seconds per batch.
# Usage: scripts/speed.sh AUTHORS_REPO_DIR  (a checkout of github.com/berndprach/1LipschitzLayersCompared;
# its Python needs einops and numpy, e.g. PYTHONPATH=/tmp/authors-py after
# `pip install --target /tmp/authors-py einops numpy`).
set -euo pipefail
repo=${1:?usage: scripts/speed.sh AUTHORS_REPO_DIR}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=2
# What the Makefile exports, so that `cargo bench` builds against the .venv libtorch from a plain shell.
export LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
python=${PYTHON:-.venv/bin/python}
out=$(mktemp -d)
uptime
for size in XS S; do
  "$python" scripts/authors_bench.py --repo "$repo" --size "$size" --batch 64 --threads 2 --iters 7 --warmup 2 --timeout 1200 | tee "$out/authors-$size.txt"
  target/release/lipctl bench --device cpu --size "$size" --batch 64 --iters 7 --warmup 2 --reference "$out/authors-$size.txt"
  uptime
done
cargo bench --bench speed
uptime
