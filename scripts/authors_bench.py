#!/usr/bin/env python3
"""Seconds per training step of the authors' PyTorch code (github.com/berndprach/1LipschitzLayersCompared),
measured the way `lipctl bench` measures lipctl: a ConvNet of the given size on random 32×32 inputs,
SGD (lr 1e-3, momentum 0.9), `warmup` untimed steps, then the median of `iters` timed steps.

The step is the authors' timing step (evaluator/batch_times.py: forward, `out.sum().backward()`,
`optimizer.step()`), plus `zero_grad`. Their code is imported from `--repo`, never copied.

    PYTHONPATH=/tmp/authors-py python scripts/authors_bench.py --repo PATH --size XS --batch 64 --threads 2

prints one line per method and, last, a JSON object {method: seconds} for `lipctl bench --reference`.
Needs `einops` and `numpy` (e.g. `pip install --target /tmp/authors-py einops numpy`).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

LAYERS = [  # lipctl's method name -> the authors' layer class name
    ("Standard", "StandardConv2d"),
    ("AOL", "AOLConv2d"),
    ("BCOP", "BCOP"),
    ("CPL", "CPLConv2d"),
    ("Cayley", "CayleyConv"),
    ("LOT", "LOT"),
    ("SLL", "SLLConv2d"),
    ("SOC", "SOC"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--size", default="XS")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--methods", default="", help="comma-separated lipctl names (default: all)")
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds per method, each then in its own process (0: all in this one); a method "
                         "past it is printed and left out of the JSON, like a failure")
    ap.add_argument("--flush-denormal", action="store_true",
                    help="torch.set_flush_denormal(True) first, as lipctl's binary does on the CPU (their "
                         "code does not; for a like-for-like comparison of the arithmetic)")
    args = ap.parse_args()
    wanted = [m for m in args.methods.split(",") if m]
    if args.timeout > 0:
        # A hang in native code (oneMKL's complex LU in their Cayley livelocked at 2 threads on a
        # Xeon here, twice) never returns to Python, so only a separate process can be cut short.
        out = {}
        for name, _ in LAYERS:
            if wanted and name not in wanted:
                continue
            # This call's own options, with the later --timeout and --methods overriding (argparse
            # keeps the last), so an option added above needs no forwarding here.
            cmd = [sys.executable, __file__, *sys.argv[1:], "--timeout", "0", "--methods", name]
            try:
                lines = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.timeout).stdout.splitlines()
            except subprocess.TimeoutExpired:
                print(f"{name:<9} timed out after {args.timeout:.0f} s in the authors' code", flush=True)
                continue
            for line in lines:
                if line.startswith("{"):
                    out.update(json.loads(line))
                else:
                    print(line, flush=True)
        print(json.dumps(out))
        return
    sys.path.insert(0, args.repo)
    import torch
    from models import get_model

    torch.set_num_threads(args.threads)
    if args.flush_denormal and not torch.set_flush_denormal(True):
        print("this CPU cannot flush denormals; timing without", file=sys.stderr)
    out = {}
    for name, layer in LAYERS:
        if wanted and name not in wanted:
            continue
        torch.manual_seed(0)
        model = get_model(f"ConvNet{args.size}", layer)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        x = torch.rand(args.batch, 3, 32, 32) - 0.5

        def step():
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()

        times = []
        try:
            for _ in range(args.warmup):
                step()
            for _ in range(args.iters):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
        except RuntimeError as e:
            # Their code's failure, e.g. Cayley-S: torch.inverse's LU reports invalid pivots
            # (oneMKL CLASWP) with 2 threads. Left out of the JSON: lipctl prints no ratio.
            print(f"{name:<9} failed in the authors' code: {str(e).splitlines()[0]}", flush=True)
            continue
        out[name] = statistics.median(times)
        print(f"{name:<9} {out[name]:.4f} s", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
