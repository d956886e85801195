#!/usr/bin/env bash
# `make dist`: a stripped copy of the release binary for another machine.
#
#   scripts/dist.sh BINARY OUTDIR   writes OUTDIR/lipctl and OUTDIR/README, prints the size
#
# The release profile keeps line tables for readable panics (about 430 MB); stripping all symbols
# and debug sections leaves the code (tens of MB). libtorch is not bundled: the binary links
# against torch 2.11.0's shared libraries, found on the other machine through LD_LIBRARY_PATH
# (the rpath build.rs embeds names this machine's virtual environment).
set -euo pipefail

bin=${1:?usage: scripts/dist.sh BINARY OUTDIR}
out=${2:?usage: scripts/dist.sh BINARY OUTDIR}
mkdir -p "$out"
objcopy --strip-all "$bin" "$out/lipctl.tmp"
mv "$out/lipctl.tmp" "$out/lipctl"
cat >"$out/README" <<'EOF'
lipctl (stripped release build). On another Linux x86-64 machine with Python's torch==2.11.0
(the CUDA wheel for GPUs) installed, run it with that torch's library folder on the loader path:
  LD_LIBRARY_PATH=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') ./lipctl doctor
and check the GPU with the project's script: LIPCTL=./lipctl scripts/gpu-check.sh
EOF
bytes=$(stat -c %s "$out/lipctl")
echo "$out/lipctl: $bytes bytes ($((bytes / 1048576)) MiB)"
