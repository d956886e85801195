#!/usr/bin/env bash
# The GPU check (`make gpu-check`): does lipctl work on this machine's CUDA device, and how fast?
#
#   1. doctor                            versions, the device, the TF32 switches
#   2. bench XS and S, batch 256         every method's training step and inference forward on CUDA,
#                                        against the paper's A100 times (Figure 2 ÷ 196 batches)
#   3. doctor --selftest --device cuda   every method's numerics on the GPU against float64 on the CPU
#   4. measure two methods               time and the CUDA allocator's peak memory (the C++ shim)
#   5. train 2 epochs + certify two methods on synthetic data
#   6. layer and network tests on CUDA   LIPCTL_TEST_DEVICE=cuda (CUDA only; CI covers the CPU): the
#                                        test binaries of `make dist` (TEST_BINS), else from a source
#                                        checkout with cargo and .venv (compiling takes minutes)
#   then one summary table and the bench tables.
#
# Sized for a 10-minute slot with the `make dist` bundle (it has not yet run on a GPU: expect
# minutes, most of them in steps 3, 5 and 6); steps 1-2 come first, so a check cut short still has
# the bench tables. Exit codes: 0 every step passed, 1 a step failed,
# 2 no CUDA device (or lipctl cannot run).
#
# On a machine without this checkout's build (a lent GPU machine): `make dist` here, copy the
# checkout and dist/lipctl-dist.tar.gz there, then
#   tar xzf dist/lipctl-dist.tar.gz -C dist && LIPCTL=dist/lipctl TEST_BINS=dist/tests scripts/gpu-check.sh
# When the binary cannot load libtorch, the script puts the torch library folder of `python3`
# (which must hold torch 2.11.0) on LD_LIBRARY_PATH and tries again.
#
# Environment:
#   LIPCTL       the lipctl binary to check (default: target/release/lipctl)
#   TEST_BINS    folder with the stripped test binaries `layers` and `networks` (`make dist` writes
#                dist/tests, built with dist/lipctl; unset: cargo builds them from this checkout)
#   WORK         folder for artifacts and logs (default: a new temporary folder, kept and printed)
#   METHODS      the two methods of steps 4 and 5 (default: "AOL SLL")
#   BENCH_SIZES  the sizes of step 2 (default: "XS S"; M and L take a minute or two more)
set -uo pipefail

LIPCTL=${LIPCTL:-target/release/lipctl}
METHODS=${METHODS:-"AOL SLL"}
BENCH_SIZES=${BENCH_SIZES:-"XS S"}

if ! out=$("$LIPCTL" --version 2>&1); then
  # A binary built on another machine finds libtorch only through LD_LIBRARY_PATH: try python3's
  # torch, which must be the version the binary was built against.
  torch=""
  if [[ "$out" == *"error while loading shared libraries"* ]]; then
    torch=$(python3 -c 'import os, torch; print(torch.__version__, os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)
  fi
  torch_version=${torch%% *} torch_lib=${torch#* }
  if [ -z "$torch" ]; then
    echo "gpu-check: cannot run lipctl ($LIPCTL): $out" >&2
    echo "gpu-check: build it (make build) or set LIPCTL=path; a dist binary needs LD_LIBRARY_PATH=<torch 2.11.0>/lib" >&2
    exit 2
  fi
  if [[ "$torch_version" != 2.11.0* ]]; then
    echo "gpu-check: lipctl does not find libtorch, and python3's torch is $torch_version, not 2.11.0: install torch==2.11.0 or set LD_LIBRARY_PATH=<torch 2.11.0>/lib" >&2
    exit 2
  fi
  echo "gpu-check: lipctl does not find libtorch; using python3's torch $torch_version in $torch_lib"
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  out=$("$LIPCTL" --version 2>&1) || {
    echo "gpu-check: cannot run lipctl ($LIPCTL) with $torch_lib either: $out" >&2
    exit 2
  }
fi
if ! "$LIPCTL" doctor --cuda-available >/dev/null 2>&1; then
  echo "gpu-check: no CUDA device: libtorch sees no GPU on this machine (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}); nothing to check" >&2
  exit 2
fi

WORK=${WORK:-$(mktemp -d -t lipctl-gpu-check.XXXXXX)}
mkdir -p "$WORK/logs"
ART="$WORK/artifacts"
echo "gpu-check: $LIPCTL, work folder $WORK"

names=() results=() seconds=() notes=() reasons=()
failed=0

# step NAME NOTE COMMAND...: runs the command with its output in $WORK/logs/NAME.log.
step() {
  local name=$1 note=$2
  shift 2
  local log="$WORK/logs/$name.log" start=$SECONDS
  echo "== $name: $*"
  if "$@" >"$log" 2>&1; then
    results+=(ok) reasons+=("")
  else
    results+=(FAILED) reasons+=("exit $?, see $log")
    failed=1
    tail -n 20 "$log" | sed 's/^/   | /'
  fi
  names+=("$name") seconds+=($((SECONDS - start))) notes+=("$note")
}

skip() {
  names+=("$1") results+=(skipped) reasons+=("") seconds+=(0) notes+=("$2")
  echo "== $1: skipped ($2)"
}

# expect LOG PATTERN...: fails the last step when its log lacks a pattern (grep -E).
expect() {
  local log="$WORK/logs/$1.log"
  shift
  local last=$((${#results[@]} - 1))
  [ "${results[$last]}" = ok ] || return
  for pattern in "$@"; do
    if ! grep -Eq -- "$pattern" "$log"; then
      results[$last]=FAILED reasons[$last]="output lacks /$pattern/, see $log"
      failed=1
      echo "   | output lacks /$pattern/"
      return
    fi
  done
}

# reject NAME PATTERN WHY: fails the last step when its log has a line matching PATTERN (grep -E).
reject() {
  local log="$WORK/logs/$1.log" last=$((${#results[@]} - 1))
  [ "${results[$last]}" = ok ] || return
  if grep -Eq -- "$2" "$log"; then
    results[$last]=FAILED reasons[$last]="$3, see $log"
    failed=1
    echo "   | $3"
  fi
}

step doctor "versions, device, TF32" "$LIPCTL" doctor --data "$WORK/data" --artifacts "$ART"
expect doctor "cuda +available"
cat "$WORK/logs/doctor.log"

for size in $BENCH_SIZES; do
  step "bench-$size" "$size batch 256 vs the paper's A100" \
    "$LIPCTL" bench --device cuda --size "$size" --batch 256 --iters 10 --warmup 3
  expect "bench-$size" "speed-up = the paper's A100"
  # A method that could not run (out of memory, a CUDA error) prints – for both times.
  reject "bench-$size" "^[A-Za-z]+ +– +– " "a method could not run"
  cat "$WORK/logs/bench-$size.log"
done

step selftest "f32 GPU vs f64 CPU, all methods" "$LIPCTL" doctor --selftest --device cuda
cat "$WORK/logs/selftest.log"

for m in $METHODS; do
  step "measure-$m" "$m-XS batch 256, CUDA allocator peak" \
    "$LIPCTL" measure --method "$m" --size XS --batch-size 256 --batches 10 --device cuda
  expect "measure-$m" '"status": "ok"' '"memory_source": "cuda_allocator"' '"peak_train_bytes": [1-9]'
done

for m in $METHODS; do
  step "certify-$m" "$m-XS synthetic, 2 epochs, train + certify" \
    "$LIPCTL" --artifacts "$ART" certify --method "$m" --size XS --dataset synthetic --epochs 2 \
      --train-per-class 500 --test-per-class 100 --device cuda
  expect "certify-$m" '"status": "ok"' '"effective": "fp32"' '"tf32_cudnn": false'
done

if [ -n "${TEST_BINS:-}" ] && ! { [ -x "$TEST_BINS/layers" ] && [ -x "$TEST_BINS/networks" ]; }; then
  # Named but not there (say, the archive not unpacked): a failure, not a silent skip.
  step tests-cuda "tests/layers.rs + tests/networks.rs on CUDA ($TEST_BINS)" \
    bash -c 'for t in layers networks; do [ -x "$1/$t" ] || { echo "TEST_BINS=$1 has no executable $t (make dist writes dist/tests)"; exit 1; }; done' _ "$TEST_BINS"
elif [ -n "${TEST_BINS:-}" ]; then
  # One harness after the other, each failing test named in its log (libtest's summary). One
  # libtorch thread per test, as `make test` runs them: libtest runs a test per core, and the CPU
  # float64 references with a full OpenMP team each would oversubscribe the cores.
  step tests-cuda "tests/layers.rs + tests/networks.rs on CUDA ($TEST_BINS)" \
    env LIPCTL_TEST_DEVICE=cuda OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 bash -c '"$1/layers"; a=$?; "$1/networks"; b=$?; exit $((a | b))' _ "$TEST_BINS"
  expect tests-cuda "test result: ok"
elif command -v cargo >/dev/null 2>&1 && [ -f Cargo.toml ] && [ -d tests ] && [ -d .venv ]; then
  # As the Makefile does: torch-sys finds libtorch through the project's virtual environment.
  export LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
  step tests-cuda "tests/layers.rs + tests/networks.rs on CUDA" \
    env LIPCTL_TEST_DEVICE=cuda OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 cargo test --release --locked --no-fail-fast --test layers --test networks
else
  skip tests-cuda "needs TEST_BINS (make dist) or a source checkout with cargo and .venv"
fi

echo
device=$("$LIPCTL" doctor --data "$WORK/data" --artifacts "$ART" | grep -m1 'cuda:' | sed 's/^ *//')
echo "gpu-check summary: $LIPCTL on ${device:-an unnamed CUDA device}"
printf '%-14s %-8s %7s  %s\n' step result seconds what
for i in "${!names[@]}"; do
  printf '%-14s %-8s %7s  %s\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}" "${notes[$i]}"
done
for i in "${!names[@]}"; do
  [ -n "${reasons[$i]}" ] && echo "${names[$i]}: ${reasons[$i]}"
done
for size in $BENCH_SIZES; do
  echo
  cat "$WORK/logs/bench-$size.log"
done
echo "logs and artifacts: $WORK"
exit $failed
