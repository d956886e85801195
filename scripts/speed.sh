#!/usr/bin/env bash
# Issue 15's speed evidence in one command, on the CPU (2 threads), each measurement printed as a
# ratio measured side by side:
#   1. SITTINGS (default 3) sittings; in each, for XS and S at batch 64 and for each method, the
#      authors' PyTorch code (scripts/authors_bench.py) and `lipctl bench` back to back (odd
#      sittings the authors' first, even ones lipctl's), so the two sides of a ratio are seconds apart. Every sitting's speed-up is printed; the
#      summary gives per method and size the median speed-up over the sittings and the lowest.
#      A method at parity lands on either side of 1.0× in a single sitting on a shared machine
#      (±15 % between runs of the same binary here), so the median is the number to read.
#   2. `cargo bench --bench speed`: end-of-epoch I/O at epoch 10 vs 1000, `measure` vs `train`
#      seconds per batch, the autocorrelation gradient of AOL/SLL against its definition, and the
#      fused MaxMin against the composed one; the circular padding against ATen's.
# Usage: scripts/speed.sh AUTHORS_REPO_DIR  (a checkout of github.com/berndprach/1LipschitzLayersCompared;
# its Python needs einops and numpy, e.g. PYTHONPATH=/tmp/authors-py after
# `pip install --target /tmp/authors-py einops numpy`).
# Environment: SITTINGS=3; SIZES="XS S"; METHODS="Standard AOL BCOP CPL Cayley LOT SLL SOC";
# AUTHORS_TIMEOUT=600 (seconds per authors' method: their Cayley livelocked in oneMKL's complex LU
# at 2 threads on this project's Xeon; a timed-out method gets no ratio); SKIP_CARGO_BENCH=1.
set -euo pipefail
repo=${1:?usage: scripts/speed.sh AUTHORS_REPO_DIR}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=2
# What the Makefile exports, so that `cargo bench` builds against the .venv libtorch from a plain shell.
export LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
python=${PYTHON:-.venv/bin/python}
sittings=${SITTINGS:-3}
sizes=${SIZES:-XS S}
methods=${METHODS:-Standard AOL BCOP CPL Cayley LOT SLL SOC}
timeout=${AUTHORS_TIMEOUT:-600}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rows="$out/rows.tsv"
: >"$rows"
uptime
authors() { # SIZE METHOD: the authors' seconds per step (their lines go to stderr), or nothing
  # `>&2` through a process substitution, not `tee /dev/stderr`: opening /dev/stderr anew truncates
  # a log file that stderr was redirected to (`speed.sh >log 2>&1` kept only the last lines).
  "$python" scripts/authors_bench.py --repo "$repo" --size "$1" --batch 64 --threads 2 --iters 7 --warmup 2 \
    --methods "$2" --timeout "$timeout" | tee >(cat >&2) | "$python" -c '
import json, sys
last = [l for l in sys.stdin if l.startswith("{")]
print(json.loads(last[-1]).get(sys.argv[1], "") if last else "")' "$2" || true
}
ours() { # SIZE METHOD: lipctl's milliseconds per training step, or nothing when it failed
  target/release/lipctl bench --device cpu --size "$1" --batch 64 --iters 7 --warmup 2 --methods "$2" 2>/dev/null |
    awk -v m="$2" 'toupper($1) == toupper(m) && $2 ~ /^[0-9.]+$/ { print $2 }' || true
}
for sitting in $(seq 1 "$sittings"); do
  for size in $sizes; do
    for method in $methods; do
      # Odd sittings run the authors' code first, even ones lipctl first: neither side always
      # follows the other onto a warm (or throttled) machine.
      if [ $((sitting % 2)) -eq 1 ]; then
        authors_s=$(authors "$size" "$method"); ours_ms=$(ours "$size" "$method")
      else
        ours_ms=$(ours "$size" "$method"); authors_s=$(authors "$size" "$method")
      fi
      # A timeout or failure on either side is recorded as no ratio (–).
      speedup=$(awk -v a="$authors_s" -v o="$ours_ms" 'BEGIN { if (a > 0 && o > 0) printf "%.2f", 1000 * a / o; else print "–" }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$sitting" "$size" "$method" "${authors_s:-–}" "${ours_ms:-–}" "$speedup" | tee -a "$rows"
    done
  done
  uptime
done
"$python" - "$rows" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
print("\nSpeed-up of lipctl over the authors' PyTorch code per training step (batch 64, 2 threads, CPU),")
print("each sitting back to back per method; median and lowest over the sittings:")
print(f"{'size':<5} {'method':<9} {'sittings':<28} {'median':>7} {'lowest':>7}")
seen = []
for _, size, method, *_ in rows:
    if (size, method) not in seen:
        seen.append((size, method))
for size, method in seen:
    ups = [r[5] for r in rows if r[1] == size and r[2] == method]
    vals = [float(u) for u in ups if u.replace(".", "", 1).isdigit()]
    med = f"{statistics.median(vals):.2f}×" if vals else "–"
    low = f"{min(vals):.2f}×" if vals else "–"
    print(f"{size:<5} {method:<9} {' '.join(ups):<28} {med:>7} {low:>7}")
EOF
if [ -z "${SKIP_CARGO_BENCH:-}" ]; then
  cargo bench --locked --bench speed
fi
uptime
