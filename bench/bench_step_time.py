#!/usr/bin/env python
"""Mean optimizer-step time of Sophia-G vs AdamW on the same model and data, measured in one run.

Steps of the two optimizers are interleaved in rounds so that machine noise hits both alike; the
Sophia-G figure includes its GNB hook (every k steps), as in a real run. A name ending in ``+stats``
also measures |delta theta| (``train.log_update_stats``) every ``--log-interval`` steps, as ``fit`` does
when that option is on. A name ending in ``+nognb`` runs the same optimizer with no Hessian refresh
after the warm-up (``optim.hess_interval`` beyond the run), so ``sophia_g`` beside ``sophia_g+nognb`` gives the
GNB share of the step in the same run: the goal for Sophia-G's step is "overhead over AdamW <= GNB share + 1 %"
(the paper's ~5 % is the estimator, not the update). Tokens/s and, on a known GPU, MFU come from the same
timed steps (the warm-up, where ``torch.compile`` compiles, is left out). Example:

    python bench/bench_step_time.py +model=tiny --steps 200 --rounds 4
    python bench/bench_step_time.py +model=tiny --optims adamw adamw+stats     # the cost of the statistic
    python bench/bench_step_time.py +model=gpt2_small data=corpus_gpt2 train.compile=true --optims adamw sophia_g sophia_g+nognb
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from sophia_train.compose import compose_config
from sophia_train.metrics import device_peak_flops
from sophia_train.trainer import Trainer

SUFFIXES = ("+stats", "+nognb")


def base_name(name: str) -> str:
    """The optimizer config of a variant name (its suffixes removed)."""
    for suffix in SUFFIXES:
        name = name.replace(suffix, "")
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", default=["+model=tiny"], help="config overrides (default: +model=tiny)")
    ap.add_argument("--optims", nargs="+", default=["adamw", "sophia_g"],
                    help="optimizer configs; NAME+stats measures |delta theta| too, NAME+nognb skips the Hessian refresh")
    ap.add_argument("--steps", type=int, default=100, help="steps per optimizer per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per optimizer first")
    ap.add_argument("--log-interval", type=int, default=10, help="for NAME+stats: measure |delta theta| every this many steps")
    args = ap.parse_args()
    total = args.warmup + args.steps * args.rounds
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.optims):
            extra = [f"optim.hess_interval={total + 1}"] if "+nognb" in name else []  # one refresh, at step 0 (warm-up)
            cfg = compose_config([*args.overrides, f"optim={base_name(name)}", f"train.out_dir={tmp}/{i}", f"train.max_steps={total}",
                                  "train.warmup_steps=0", "train.plot=false", *extra])
            trainers[name] = Trainer(cfg)
        times = {name: [] for name in args.optims}
        step = {name: 0 for name in args.optims}

        def run(name: str, tr: Trainer) -> None:
            stats = "+stats" in name and (step[name] + 1) % args.log_interval == 0
            tr.train_step(step[name], measure_update=stats)
            step[name] += 1

        for name, tr in trainers.items():
            for _ in range(args.warmup):
                run(name, tr)
            if tr.device.type == "cuda":
                torch.cuda.synchronize()  # the warm-up's queued work ends before any timed window
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
        first = next(iter(trainers.values()))
        report(args, times, first.tokens_per_step, first.model.flops_per_token(), first.device)


def report(args: argparse.Namespace, times: dict[str, list[float]], tokens_per_step: int, flops_per_token: float,
           device: torch.device) -> None:
    """The table (ms/step, ratio to the first optimizer, tokens/s, MFU) and the GNB-share verdict."""
    base = statistics.mean(times[args.optims[0]])
    peak = device_peak_flops(device)
    print(f"{'optimizer':<16} {'ms/step (mean of rounds)':>26} {'min':>8} {'max':>8} {'ratio vs ' + args.optims[0]:>16} "
          f"{'tokens/s':>12} {'MFU':>7}")
    for name in args.optims:
        ts = times[name]
        mean = statistics.mean(ts)
        tok_s = tokens_per_step / (mean / 1000)
        mfu = f"{flops_per_token * tok_s / peak:.1%}" if peak else "n/a"
        print(f"{name:<16} {mean:>26.2f} {min(ts):>8.2f} {max(ts):>8.2f} {mean / base:>16.3f} {tok_s:>12,.0f} {mfu:>7}")
    for name in args.optims:
        if "+nognb" in name and base_name(name) in times:
            full, bare = statistics.mean(times[base_name(name)]), statistics.mean(times[name])
            share, overhead = (full - bare) / base, full / base - 1
            verdict = "holds" if overhead <= share + 0.01 else "missed"
            print(f"GNB share {base_name(name)}: {share:.1%} of a {args.optims[0]} step; step overhead {overhead:+.1%}; "
                  f"goal overhead <= GNB share + 1 %: {verdict} (update alone {bare / base - 1:+.1%})")
    print(f"device {device}, torch threads {torch.get_num_threads()}, tokens/step {tokens_per_step:,}, overrides {args.overrides}")


if __name__ == "__main__":
    main()
