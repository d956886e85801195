#!/usr/bin/env bash
# `make dist`: stripped copies of the release binary (and of the CUDA-capable test binaries) for
# another machine, and one archive of them to carry there.
#
#   scripts/dist.sh BINARY OUTDIR [TEST_BINARY...]
#
# writes OUTDIR/lipctl, OUTDIR/README, OUTDIR/tests/NAME for each test binary (cargo's hash suffix
# dropped: target/release/deps/layers-0123abcd becomes tests/layers), and OUTDIR/lipctl-dist.tar.gz
# holding all of them, and prints the sizes. The release profile keeps line tables for readable
# panics (about 430 MB); stripping all symbols and debug sections leaves the code (tens of MB), and
# gzip a third of that: the archive, not the binary, is what fits beside the checkout in a 64 MiB
# transfer (the tracked tree is about 30 MB, mostly test fixtures). libtorch is not bundled: the
# binaries link against torch 2.11.0's shared libraries, found on the other machine through
# LD_LIBRARY_PATH (the rpath build.rs embeds names this machine's virtual environment).
set -euo pipefail

bin=${1:?usage: scripts/dist.sh BINARY OUTDIR [TEST_BINARY...]}
out=${2:?usage: scripts/dist.sh BINARY OUTDIR [TEST_BINARY...]}
shift 2
mkdir -p "$out"
strip_to() { # SOURCE DEST: a stripped copy, written under a temporary name and then renamed
  objcopy --strip-all "$1" "$2.tmp"
  mv "$2.tmp" "$2"
}
strip_to "$bin" "$out/lipctl"
rm -rf "$out/tests"
members=(lipctl README)
if [ $# -gt 0 ]; then
  mkdir -p "$out/tests"
  for t in "$@"; do
    name=$(basename "$t")
    [[ $name =~ ^(.+)-[0-9a-f]{16}$ ]] && name=${BASH_REMATCH[1]}
    strip_to "$t" "$out/tests/$name"
    members+=("tests/$name")
  done
fi
cat >"$out/README" <<'README'
lipctl (stripped release build). On another Linux x86-64 machine with Python's torch==2.11.0
(the CUDA wheel for GPUs) installed, run it with that torch's library folder on the loader path:
  LD_LIBRARY_PATH=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') ./lipctl doctor
and check the GPU from the project's checkout, with this folder as dist/ (the script finds
python3's torch by itself when the binary does not find libtorch):
  LIPCTL=dist/lipctl TEST_BINS=dist/tests scripts/gpu-check.sh
tests/ holds the stripped layer and network test binaries (LIPCTL_TEST_DEVICE=cuda runs them on the
GPU only). lipctl-dist.tar.gz holds all of this folder's files: carry it alone, then
  tar xzf dist/lipctl-dist.tar.gz -C dist
README
tar -czf "$out/lipctl-dist.tar.gz.tmp" -C "$out" "${members[@]}"
mv "$out/lipctl-dist.tar.gz.tmp" "$out/lipctl-dist.tar.gz"
for f in lipctl "${members[@]:2}" lipctl-dist.tar.gz; do
  bytes=$(stat -c %s "$out/$f")
  echo "$out/$f: $bytes bytes ($((bytes / 1048576)) MiB)"
done
