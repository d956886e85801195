# lipctl — one-command set-up. `make reproduce` (the study) and `make test` (CI) install what they
# need: a Python virtual environment holding the PyPI wheel torch==2.11.0, whose libtorch tch 0.24
# links against. build.rs embeds an rpath to its library folder, so no LD_LIBRARY_PATH is needed.

SHELL        := /bin/bash
PYTHON       ?= python3
TORCH_VERSION := 2.11.0
VENV         := $(CURDIR)/.venv
STAMP        := $(VENV)/.torch-$(TORCH_VERSION)
LIPCTL       := target/release/lipctl
DATA         ?=
PIPELINE     ?=

# torch-sys asks the active Python where libtorch lives.
export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: all build test test-slurm slurm-packages reproduce bench clean-artifacts dist gpu-check

all: build

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	touch $@

build: $(STAMP)
	cargo build --release --locked

# Tests run in the release profile: the binary they drive is compiled once, for tests and use.
# One libtorch thread per test, cargo runs as many tests as there are cores: no oversubscription
# (OpenMP/MKL threads spinning against each other stall libtorch on a 2-core machine).
test: build
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 cargo test --release --locked --no-fail-fast

# The cluster tests: a real single-node Slurm on localhost (tests/slurm/cluster.sh starts and stops
# it), Debian's slurm-wlm and munge installed here when missing (root needed). One test at a time:
# each starts its own cluster and keeps both cores busy.
slurm-packages:
	@PATH=$$PATH:/usr/sbin:/sbin; command -v slurmctld >/dev/null && command -v munged >/dev/null || \
	  { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }

test-slurm: build slurm-packages
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 cargo test --release --locked --test slurm -- --ignored --test-threads=1

# The study: gpu.yaml (one GPU, ~12 device-hours) where CUDA is available, the CPU-sized
# quick.yaml otherwise; paper.yaml (the full study) is for a cluster or PIPELINE=.
# Overrides: make reproduce PIPELINE=pipelines/smoke.yaml DATA=path/to/cifar-10-binary.tar.gz
# Data: without DATA the shipped pipelines read CIFAR-10 from data/ (downloaded when missing); on
# this project's machines the JPEG copy beside the checkout is passed as DATA when it exists.
LOCAL_CIFAR10 := $(wildcard ../shared/data/cifar10-jpeg.tar.gz)
reproduce: build
	@pipeline="$(PIPELINE)"; data="$(DATA)"; workers=""; \
	if [ -z "$$pipeline" ]; then \
	  if $(LIPCTL) doctor --cuda-available >/dev/null 2>&1; then \
	    pipeline=pipelines/gpu.yaml; workers="--devices all"; echo "CUDA available: running $$pipeline on every visible GPU"; \
	  else \
	    pipeline=pipelines/quick.yaml; echo "no CUDA: running the CPU-sized $$pipeline"; \
	  fi; \
	  if [ -z "$$data" ] && [ -n "$(LOCAL_CIFAR10)" ]; then data="$(LOCAL_CIFAR10)"; echo "data: $$data"; fi; \
	fi; \
	status=0; \
	$(LIPCTL) run "$$pipeline" $${data:+--data "$$data"} $$workers || status=$$?; \
	$(LIPCTL) report --pipeline "$$pipeline" $${data:+--data "$$data"} || status=$$?; \
	exit $$status

# A stripped release binary for another machine (dist/lipctl), the stripped layer and network test
# binaries (dist/tests, for the GPU check), one archive of them (dist/lipctl-dist.tar.gz, what fits
# beside the checkout in a 64 MiB transfer) and a note on running them there with that machine's
# torch 2.11.0 libraries (dist/README). cargo names the test executables in its JSON messages.
dist: build
	@set -o pipefail; tests=$$(cargo test --release --locked --no-run --test layers --test networks --message-format=json-render-diagnostics | \
	  $(VENV)/bin/python -c 'import json, sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]]') && \
	  [ -n "$$tests" ] || { echo "make dist: cargo named no test executables for layers and networks" >&2; exit 1; }; \
	  scripts/dist.sh $(LIPCTL) dist $$tests

# The GPU check: doctor, the CUDA bench against the paper's A100 times, the self-test, measure,
# train and certify on CUDA, the layer and network tests on CUDA, one summary table
# (scripts/gpu-check.sh). Exit 2 without a CUDA device. Another binary: make gpu-check
# LIPCTL=dist/lipctl, or run the script directly (its header says how, from `make dist`'s archive).
gpu-check: build
	LIPCTL=$(LIPCTL) scripts/gpu-check.sh

bench: build
	$(LIPCTL) bench --size XS --batch 64

clean-artifacts:
	rm -rf artifacts/*/
