#!/usr/bin/env python
"""Mean optimizer-step time of Sophia-G vs AdamW on the same model and data, measured in one run.

Steps of the two optimizers are interleaved in rounds so that machine noise hits both alike; the
Sophia-G figure includes its GNB hook (every k steps), as in a real run. A name ending in ``+stats``
also measures |delta theta| (``train.log_update_stats``) every ``--log-interval`` steps, as ``fit`` does
when that option is on. Example:

    python bench/bench_step_time.py +model=tiny --steps 200 --rounds 4
    python bench/bench_step_time.py +model=tiny --optims adamw adamw+stats     # the cost of the statistic
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from sophia_train.compose import compose_config
from sophia_train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", default=["+model=tiny"], help="config overrides (default: +model=tiny)")
    ap.add_argument("--optims", nargs="+", default=["adamw", "sophia_g"], help="optimizer configs; NAME+stats measures |delta theta| too")
    ap.add_argument("--steps", type=int, default=100, help="steps per optimizer per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per optimizer first")
    ap.add_argument("--log-interval", type=int, default=10, help="for NAME+stats: measure |delta theta| every this many steps")
    args = ap.parse_args()
    total = args.warmup + args.steps * args.rounds
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.optims):
            optim = name.removesuffix("+stats")
            cfg = compose_config([*args.overrides, f"optim={optim}", f"train.out_dir={tmp}/{i}", f"train.max_steps={total}",
                                  "train.warmup_steps=0", "train.plot=false"])
            trainers[name] = Trainer(cfg)
        times = {name: [] for name in args.optims}
        step = {name: 0 for name in args.optims}

        def run(name: str, tr: Trainer) -> None:
            stats = name.endswith("+stats") and (step[name] + 1) % args.log_interval == 0
            tr.train_step(step[name], measure_update=stats)
            step[name] += 1

        for name, tr in trainers.items():
            for _ in range(args.warmup):
                run(name, tr)
        for _ in range(args.rounds):
            for name, tr in trainers.items():
                if tr.device.type == "cuda":
                    torch.cuda.synchronize()  # the previous optimizer's (or the warm-up's) queued work is not timed here
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    run(name, tr)
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
