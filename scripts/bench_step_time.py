#!/usr/bin/env python
"""Mean optimizer-step time of Sophia-G vs AdamW on the same model and data, measured in one run.

Steps of the two optimizers are interleaved in rounds so that machine noise hits both alike; the
Sophia-G figure includes its GNB hook (every k steps), as in a real run. Example:

    python scripts/bench_step_time.py +model=tiny --steps 200 --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from sophia_train.config import compose_config
from sophia_train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", default=["+model=tiny"], help="config overrides (default: +model=tiny)")
    ap.add_argument("--optims", nargs="+", default=["adamw", "sophia_g"])
    ap.add_argument("--steps", type=int, default=100, help="steps per optimizer per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per optimizer first")
    args = ap.parse_args()
    total = args.warmup + args.steps * args.rounds
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.optims:
            cfg = compose_config([*args.overrides, f"optim={name}", f"train.out_dir={tmp}/{name}", f"train.max_steps={total}", "train.warmup_steps=0", "train.plot=false"])
            trainers[name] = Trainer(cfg)
        times = {name: [] for name in args.optims}
        step = {name: 0 for name in args.optims}
        for name, tr in trainers.items():
            for _ in range(args.warmup):
                tr.train_step(step[name])
                step[name] += 1
        for _ in range(args.rounds):
            for name, tr in trainers.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    tr.train_step(step[name])
                    step[name] += 1
                if tr.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - t0) * 1000 / args.steps)
    base = statistics.mean(times[args.optims[0]])
    print(f"{'optimizer':<12} {'ms/step (mean of rounds)':>26} {'min':>8} {'max':>8} {'ratio vs ' + args.optims[0]:>16}")
    for name in args.optims:
        ts = times[name]
        print(f"{name:<12} {statistics.mean(ts):>26.2f} {min(ts):>8.2f} {max(ts):>8.2f} {statistics.mean(ts) / base:>16.3f}")
    print(f"device {next(iter(trainers.values())).device}, torch threads {torch.get_num_threads()}, overrides {args.overrides}")


if __name__ == "__main__":
    main()
