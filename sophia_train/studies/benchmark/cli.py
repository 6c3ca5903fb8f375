"""The fair optimizer benchmark: every optimizer tuned, compared at the end of training across model
sizes, data budgets and batch sizes, speedups over AdamW as the Sophia paper and Wen et al. (2025) define them.

A profile (``profiles.PROFILES``) names the sizes (each with its parameter count, tokens per step and budgets
in optimizer steps chosen as tokens per parameter; a batch-axis size is one model at another batch), the seeds,
the optimizers, their search spaces and every hyperparameter left fixed with the reason (protocol v2):

1. Phase I: coordinate descent (``studies.search.tune``: a line search per hyperparameter, the grid
   extended while the best sits on its edge, a second pass at v/2, v, 2v) over each optimizer's own
   hyperparameters, beta1 included, at the anchor (the first size at ``anchor_index``), each point's loss
   the mean over ``tune_seeds`` seeds; then ``settle``: move to a better x1/2 or x2 neighbour until none
   is, so the point is a checked local optimum. Betas are searched as 1 - beta (log scale), the warmup as
   a fraction of the run.
2. Phase II: at every other (size, budget) a size retunes (``retune``), only ``phase2`` (the LR, and rho
   for Sophia or the first moment for the others) is searched again around the Phase I point, on
   ``phase2_seeds`` seeds; a budget not retuned reuses the nearest retuned one's point.
3. The ablation (``ablation``): at the anchor, beta1 left at the optimizer's default, the rest retuned.
4. The chosen point of every (optimizer, size, budget) runs with every seed; the reports use the mean and
   sd over seeds, flag differences to AdamW within 2 seed sd as ties, and show Sophia's not-clipped share
   and ||h||. ``speedup.py`` fits AdamW's L(D) per size and turns each loss into the data, wall-clock and
   compute AdamW would need.

Every run is an ordinary training run in ``OUT/runs/<name>``; ``OUT/results.jsonl`` keeps each
finished run's final val loss, training seconds, tokens and diagnostics, so re-invoking skips finished
runs, and a run interrupted mid-way continues from its checkpoint. ``OUT/table.md`` and the PNGs are
rebuilt from results at the end (``--report-only`` rebuilds them alone, byte for byte).

    python scripts/optimizer_benchmark.py --profile quick --out runs/benchmark_quick   # a few minutes, pipeline test
    python scripts/optimizer_benchmark.py --profile cpu --out results/benchmark_cpu_v21 --workers 2  # protocol v2.1, ~3 h on 2 cores
    python scripts/optimizer_benchmark.py --profile gpu_small --estimate                # GPU-hours, no runs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from sophia_train.distributed.stop_signals import EXIT_STOPPED, die_with_parent
from sophia_train.errors import ConfigError, StoppedBySignal
from sophia_train.metrics import format_duration
from sophia_train.studies.benchmark.costs import estimate
from sophia_train.studies.benchmark.profiles import PROFILES, Profile
from sophia_train.studies.benchmark.report import report
from sophia_train.studies.benchmark.tuning import planned_runs, run_profile


def run_workers(profile: Profile, out: Path, optims: list[str], workers: int, child_args: list[str]) -> None:
    """Split a profile's optimizers over ``workers`` local processes (a queue: each takes the next optimizer
    when it finishes one, the ones with the most planned runs first); each child is this script with
    ``--optims X --runs-only``, sharing ``out`` (results.jsonl and the tuned points are written under a lock)."""
    order = ["adamw"] if "adamw" in optims else []
    order += sorted((o for o in optims if o != "adamw"), key=lambda o: -planned_runs(profile, [o]))
    pending, running, failed, t0 = list(order), {}, [], time.perf_counter()
    print(f"[{profile.name}] {len(order)} optimizers over {workers} local workers: {', '.join(order)}", flush=True)
    try:
        while pending or running:
            while pending and len(running) < workers:
                optim = pending.pop(0)
                cmd = [sys.executable, "-m", "sophia_train.studies.benchmark", "--profile", profile.name, "--out", str(out),
                       "--optims", optim, "--runs-only", *child_args]
                running[subprocess.Popen(cmd, preexec_fn=die_with_parent)] = optim  # a killed parent: SIGTERM, they save and stop
            time.sleep(0.5)
            for proc in [p for p in running if p.poll() is not None]:
                optim = running.pop(proc)
                if proc.returncode != 0:
                    failed.append(f"{optim} (exit {proc.returncode})")
                finished = len(order) - len(pending) - len(running)
                print(f"[{profile.name}] {optim} {'done' if proc.returncode == 0 else 'FAILED'}: {finished}/{len(order)} "
                      f"optimizers finished | elapsed {format_duration(time.perf_counter() - t0)}", flush=True)
    except KeyboardInterrupt:
        for proc in running:
            proc.terminate()
        raise
    if failed:
        raise SystemExit(f"error: the benchmark workers of {', '.join(failed)} failed (their output is above). "
                         f"Re-run the same command: finished runs are kept and half-finished ones continue.")


def main(argv: list[str] | None = None) -> int:
    """``scripts/optimizer_benchmark.py``: run a profile (resumable), then write its table and plots. A problem
    with the inputs (a run folder held by another process, a damaged results.jsonl) is one paragraph, exit 2;
    a stop signal ends the current run with its checkpoint saved (exit 75; the same command continues)."""
    try:
        return _main(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StoppedBySignal as e:
        print(f"{e} The benchmark stopped there; re-run the same command to continue it.", file=sys.stderr)
        return EXIT_STOPPED


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=list(PROFILES), default="quick")
    ap.add_argument("--out", help="results folder (default runs/benchmark_<profile>)")
    ap.add_argument("--optims", nargs="+", help="a subset of the profile's optimizers (the others keep their results)")
    ap.add_argument("--data-dir", help="prepared dataset folder (default: the data config's)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    ap.add_argument("--report-only", action="store_true", help="only rebuild table.md and the PNGs")
    ap.add_argument("--estimate", action="store_true", help="print the profile's GPU-hours and exit")
    ap.add_argument("--workers", type=int, default=1,
                    help="local processes to split the optimizers over (default 1); each gets --threads, or the "
                         "machine's cores / workers, torch threads")
    ap.add_argument("--runs-only", action="store_true", help="train the runs but skip the report (what workers run)")
    args = ap.parse_args(argv)
    if args.workers < 1:
        raise SystemExit(f"error: --workers must be 1 or more, got {args.workers}.")
    profile = PROFILES[args.profile]
    if args.estimate:
        print(estimate(profile))
        return 0
    out = Path(args.out or f"runs/benchmark_{profile.name}")
    optims = args.optims or profile.optims
    unknown = sorted(set(optims) - set(profile.optims))
    if unknown:
        raise SystemExit(f"error: profile {profile.name} has no search space for {', '.join(unknown)} (it has {', '.join(profile.optims)}).")
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.workers) if args.workers > 1 else None)
    extra = [*([f"data.dir={args.data_dir}"] if args.data_dir else []), *([f"train.threads={threads}"] if threads else [])]
    if not args.report_only:
        t0 = time.perf_counter()
        if args.workers > 1:
            out.mkdir(parents=True, exist_ok=True)
            child = [*(["--data-dir", args.data_dir] if args.data_dir else []), "--threads", str(threads)]
            run_workers(profile, out, optims, args.workers, child)
        else:
            run_profile(profile, out, extra, ["adamw", *[o for o in optims if o != "adamw"]] if "adamw" in optims else optims)
        print(f"[{profile.name}] all runs done in {format_duration(time.perf_counter() - t0)}", flush=True)
    if args.runs_only:
        return 0
    if not (out / "chosen.json").exists():
        empty = "" if (out / "results.jsonl").exists() else " (nothing was run there)"
        raise ConfigError(f"{out} holds no chosen.json yet: it is written as each optimizer finishes its tuning, and none "
                          f"has{empty}. Run the profile without --report-only first (it resumes where it stopped).")
    print(report(profile, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
