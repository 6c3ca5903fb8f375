#!/usr/bin/env python
"""Probe a finished benchmark's chosen point: the same runs as the benchmark makes (its profile, size and
budget), with some hyperparameters changed together, on 2 seeds, to test whether its search missed a better
joint point (coordinate descent moves one hyperparameter at a time).

    python scripts/benchmark_probe.py --bench results/benchmark_cpu_v2 --optim sophia_g --out /tmp/probe \\
        '{"warmup": 0.4, "lr": 0.002}' '{"warmup": 0.4, "lr": 0.001}'

Prints one ``PROBE`` line per change (its losses per seed and their mean) beside the chosen point's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from sophia_train.studies.benchmark.profiles import PROFILES
from sophia_train.studies.benchmark.runner import Runner


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("changes", nargs="+", help="JSON objects: hyperparameters to set on top of the chosen point")
    ap.add_argument("--bench", type=Path, required=True, help="a finished benchmark folder (its chosen.json)")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--optim", required=True)
    ap.add_argument("--out", type=Path, required=True, help="where the probe's runs go (not the benchmark folder)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    profile = PROFILES[args.profile]
    size = profile.sizes[0]
    steps = size.steps[1] if len(size.steps) > 1 else size.steps[0]  # the anchor budget of Phase I
    chosen = json.loads((args.bench / "chosen.json").read_text())[args.optim]
    key = next(k for k in chosen if k.endswith(f"/{steps}") and k.startswith(f"{size.name}/"))
    base = dict(chosen[key])
    print(f"chosen point of {args.optim} at {key}: {base}")
    args.out.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.out, profile, [f"train.threads={args.threads}"], planned=(len(args.changes) + 1) * args.seeds)
    for change in [{}, *(json.loads(c) for c in args.changes)]:
        point = {**base, **change}
        losses = [runner.run(size, args.optim, point, steps, seed, "probe").final_val for seed in range(args.seeds)]
        print(f"PROBE {json.dumps(change) or 'chosen'} {[round(x, 4) for x in losses]} mean {statistics.mean(losses):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
