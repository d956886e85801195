#!/usr/bin/env bash
# The ten-minute GPU check (`make gpu-check`): does lipctl work on this machine's CUDA device?
#
#   1. doctor                            versions, the device, the TF32 switches
#   2. doctor --selftest --device cuda   every method's numerics on the GPU against float64 on the CPU
#   3. layer and network tests on CUDA   only from a source checkout with cargo (LIPCTL_TEST_DEVICE=cuda:
#                                        CUDA only; CI covers the CPU)
#   4. measure two methods               time and the CUDA allocator's peak memory (the C++ shim)
#   5. train 2 epochs + certify two methods on synthetic data
#   then one summary table.
#
# Designed to finish in under 8 minutes on an H100 (most of it compiling the tests in step 3).
# Exit codes: 0 every step passed, 1 a step failed, 2 no CUDA device (or lipctl cannot run).
#
# Environment:
#   LIPCTL   the lipctl binary to check (default: target/release/lipctl; e.g. the `make dist`
#            binary on another machine, with LD_LIBRARY_PATH naming that machine's torch lib folder)
#   WORK     folder for artifacts and logs (default: a new temporary folder, kept and printed)
#   METHODS  the two methods of steps 4 and 5 (default: "AOL SLL")
set -uo pipefail

LIPCTL=${LIPCTL:-target/release/lipctl}
METHODS=${METHODS:-"AOL SLL"}

if ! out=$("$LIPCTL" --version 2>&1); then
  echo "gpu-check: cannot run lipctl ($LIPCTL): $out" >&2
  echo "gpu-check: build it (make build) or set LIPCTL=path; a dist binary needs LD_LIBRARY_PATH=<torch 2.11.0>/lib" >&2
  exit 2
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

step doctor "versions, device, TF32" "$LIPCTL" doctor --data "$WORK/data" --artifacts "$ART"
expect doctor "cuda +available"
cat "$WORK/logs/doctor.log"

step selftest "f32 GPU vs f64 CPU, all methods" "$LIPCTL" doctor --selftest --device cuda
cat "$WORK/logs/selftest.log"

if command -v cargo >/dev/null 2>&1 && [ -f Cargo.toml ] && [ -d tests ]; then
  # As the Makefile does: torch-sys finds libtorch through the project's virtual environment.
  if [ -d .venv ]; then
    export LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
  fi
  step tests-cuda "tests/layers.rs + tests/networks.rs on CUDA" \
    env LIPCTL_TEST_DEVICE=cuda cargo test --release --locked --no-fail-fast --test layers --test networks
else
  skip tests-cuda "needs a source checkout and cargo (run from the project root)"
fi

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
echo "logs and artifacts: $WORK"
exit $failed
