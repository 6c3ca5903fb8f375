#!/usr/bin/env python
"""The demo's wall-clock time idle and beside a CPU-bound load, with ``train.threads=auto`` and torch's default.

torch starts one thread per core whatever else runs; on a busy CPU its threads wait on each other. This runs
the training part of ``make demo`` (same model and settings) as a child process in these modes, one after
another, on an otherwise idle machine:

* ``idle-auto``: nothing else running, ``train.threads=auto`` (the default);
* ``load-auto``: ``--load-procs`` busy-loop processes started ``--warmup`` seconds before (so the 1-minute
  load average has seen them), ``train.threads=auto``;
* ``load-default``: the same load, ``train.threads=0`` (torch's own thread count, the old default).

It prints one Markdown table (seconds, ms/step, threads chosen, ratio to idle) and writes it to ``--out``.
The target (issue 24): ``load-auto`` within 1.5x of ``idle-auto``.

    python bench/bench_threads_under_load.py --out bench/results/threads_under_load_cpu.md
    python bench/bench_threads_under_load.py --steps 300 --modes idle-auto,load-default   # shorter
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DEMO = ["+model=tiny", "optim=sophia_g", "train.batch_size=16", "train.eval_interval=200",
        "train.eval_iters=40", "train.log_interval=50", "train.overwrite=true", "train.plot=false"]
MODES = {"idle-auto": (False, "auto"), "load-auto": (True, "auto"), "load-default": (True, "0")}


def start_load(procs: int) -> list[subprocess.Popen]:
    """``procs`` single-threaded busy loops (a CPU-bound load that uses no torch)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(procs)]


def stop_load(load: list[subprocess.Popen]) -> None:
    """Kill the busy loops."""
    for p in load:
        p.kill()
    for p in load:
        p.wait()


def run_demo(steps: int, threads: str, data_dir: str | None, out_dir: Path) -> tuple[float, str]:
    """Train the demo once; return (seconds, the banner's thread line)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # auto must see the machine, not a preset
    args = [sys.executable, "-m", "sophia_train", *DEMO, f"train.max_steps={steps}", f"train.warmup_steps={min(100, steps)}",
            f"train.threads={threads}",
            f"train.out_dir={out_dir}", *([f"data.dir={data_dir}"] if data_dir else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the demo run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    line = next((m.group(0) for m in re.finditer(r"torch CPU threads: .*", proc.stdout)), "?")
    return secs, line


def main(argv: list[str] | None = None) -> None:
    """Command line: run the modes, print and write the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1200, help="training steps (the demo's 1200)")
    ap.add_argument("--load-procs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="busy-loop processes of the load (default: half the cores)")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds the load runs before a loaded demo starts")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    ap.add_argument("--data-dir", help="prepared data (default: the config's data/corpus)")
    ap.add_argument("--out", help="also write the Markdown table here")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    rows, idle = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            loaded, threads = MODES[mode]
            load = start_load(args.load_procs) if loaded else []
            try:
                if loaded:
                    time.sleep(args.warmup)
                load_avg = os.getloadavg()[0]
                print(f"[{mode}] load average {load_avg:.2f} at start, {args.steps} steps ...", flush=True)
                secs, line = run_demo(args.steps, threads, args.data_dir, Path(tmp) / mode)
            finally:
                stop_load(load)
            if mode == "idle-auto":
                idle = secs
            rows.append((mode, secs, load_avg, line))
            print(f"[{mode}] {secs:.1f} s | {line}", flush=True)
            if loaded:
                time.sleep(args.warmup)  # let the load average fall before the next mode
    lines = [f"Demo training (`make demo`'s settings, {args.steps} steps), {args.load_procs} busy-loop process(es) as the "
             f"load, on {platform.processor() or platform.machine()} with {os.cpu_count()} cores, torch {torch.__version__}.",
             "Command: `python bench/bench_threads_under_load.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`", "",
             "| mode | seconds | wall ms per step | x idle-auto | load average at start | threads |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for mode, secs, load_avg, line in rows:
        ratio = f"{secs / idle:.2f}" if idle else "—"
        chosen = line.removeprefix("torch CPU threads: ")
        lines.append(f"| {mode} | {secs:.1f} | {1000 * secs / args.steps:.1f} | {ratio} | {load_avg:.2f} | {chosen} |")
    idle_load = next((r[2] for r in rows if r[0] == "idle-auto"), 0.0)
    if idle_load > 0.5:
        lines += ["", f"**Not idle**: the load average was {idle_load:.2f} when idle-auto started; other work shared the "
                  f"cores, so these figures do not measure what they say. Rerun on an idle machine."]
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
