#!/usr/bin/env python
"""A CPU-scale, honest optimizer comparison: tune each optimizer's LR for T steps, then run T and T/2.

For every optimizer: a small LR grid at T steps (seed 0), extended by factors of 2 while the best
LR sits on its edge, picks the LR with the lowest final val loss;
that LR then runs at T steps with the other seeds and at T/2 steps (its own cosine schedule) with
every seed. The paper's Sec. 3.2 test is then applied by ``scripts/compare_runs.py``: does optimizer
S at T/2 reach AdamW's loss at T? Everything uses the tiny GPT on the byte-level default corpus.

    python scripts/cpu_benchmark.py --out results/cpu_benchmark            # ~25 min on 2 cores
    python scripts/compare_runs.py results/cpu_benchmark --baseline adamw  # table + verdicts
    python scripts/plot_runs.py ... (the benchmark writes curves.png itself)

Finished runs (a metrics.jsonl with an ``end`` record) are skipped, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sophia_train.config import compose_config
from sophia_train.metrics import read_metrics
from sophia_train.trainer import Trainer

GRIDS = {  # three LRs per optimizer, a factor of 2 apart, around each one's sensible tiny-model range
    "adamw": [1e-3, 2e-3, 4e-3],
    "lion": [2.5e-4, 5e-4, 1e-3],
    "sophia_g": [3e-4, 6e-4, 1.2e-3],
    "sophia_h": [3e-4, 6e-4, 1.2e-3],
    "s3": [5e-4, 1e-3, 2e-3],
}


def run_name(optim: str, lr: float, steps: int, seed: int) -> str:
    """Folder name of one run: optimizer, LR, horizon and seed."""
    return f"{optim}-lr{lr:g}-T{steps}-s{seed}"


def final_val(run_dir: Path) -> float | None:
    """Final val loss of a finished run, None if it did not finish."""
    f = run_dir / "metrics.jsonl"
    if not f.exists():
        return None
    rows = read_metrics(f)
    end = [r for r in rows if r["kind"] == "end"]
    return end[-1]["final_val_loss"] if end else None


def train(out: Path, optim: str, lr: float, steps: int, seed: int, common: list[str]) -> float:
    """Run (or reuse) one training run; returns its final val loss (inf if it diverged)."""
    d = out / "runs" / run_name(optim, lr, steps, seed)
    done = final_val(d)
    if done is not None:
        return done
    cfg = compose_config([
        "+model=tiny", f"optim={optim}", f"optim.lr={lr}", f"train.max_steps={steps}", f"train.seed={seed}",
        f"train.out_dir={d}", "train.overwrite=true", "train.plot=false", f"train.warmup_steps={max(1, steps // 20)}",
        f"train.eval_interval={max(1, steps // 16)}", *common,
    ])
    t0 = time.time()
    try:
        summary = Trainer(cfg).fit()
        loss = summary["final_val_loss"]
    except Exception as e:  # a diverged run is a result, not a crash of the benchmark
        print(f"{d.name}: {type(e).__name__}: {e}")
        with open(d / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"kind": "end", "step": steps, "final_val_loss": float("inf"), "error": str(e)}) + "\n")
        loss = float("inf")
    (d / "ckpt.pt").unlink(missing_ok=True)  # the curves are the result; checkpoints would bloat the repo
    print(f"{d.name}: final val {loss:.4f} ({time.time() - t0:.0f}s)", flush=True)
    return loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/cpu_benchmark")
    ap.add_argument("--steps", type=int, default=800, help="T; the short runs take T/2")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--optims", nargs="+", default=list(GRIDS))
    ap.add_argument("--data-dir", default=None, help="prepared dataset (default: the corpus config's folder)")
    ap.add_argument("--report-only", action="store_true", help="only rebuild table.md and the PNGs from finished runs")
    args = ap.parse_args()
    out = Path(args.out)
    common = ["train.batch_size=8", "train.eval_iters=40", "train.log_interval=25", "train.threads=2"]
    if args.data_dir:
        common.append(f"data.dir={args.data_dir}")
    if args.report_only:
        report(out, args.steps, json.loads((out / "best_lr.json").read_text()), args.seeds[0])
        return
    best = {}
    for optim in args.optims:
        losses = {lr: train(out, optim, lr, args.steps, args.seeds[0], common) for lr in GRIDS[optim]}
        for _ in range(3):  # a best LR on the edge of the grid is not tuned: extend by x2 that way
            lr = min(losses, key=losses.get)
            if lr == max(losses):
                nxt = lr * 2
            elif lr == min(losses):
                nxt = lr / 2
            else:
                break
            losses[nxt] = train(out, optim, nxt, args.steps, args.seeds[0], common)
        best[optim] = min(losses, key=losses.get)
        print(f"{optim}: best LR {best[optim]:g} ({losses})", flush=True)
    for optim in args.optims:
        for seed in args.seeds:
            train(out, optim, best[optim], args.steps, seed, common)
            train(out, optim, best[optim], args.steps // 2, seed, common)
    (out / "best_lr.json").write_text(json.dumps(best, indent=2) + "\n")
    print(f"best LRs: {best}")
    report(out, args.steps, best, args.seeds[0])


def report(out: Path, steps: int, best: dict[str, float], seed: int) -> None:
    """table.md (Sec. 3.2 verdicts), curves by step and by wall-clock, Sophia diagnostics."""
    from sophia_train.compare import find_runs, markdown_report
    from sophia_train.plotting import plot_diagnostics, plot_runs

    table = markdown_report(find_runs([out / "runs"]), "adamw", steps)
    (out / "table.md").write_text(table + "\n")
    print(table)
    chosen = [out / "runs" / run_name(o, lr, T, seed) for o, lr in best.items() for T in (steps, steps // 2)]
    labels = [f"{o} lr={lr:g} T={T}" for o, lr in best.items() for T in (steps, steps // 2)]
    plot_runs(chosen, out / "curves.png", title=f"tiny GPT, byte-level corpus: val loss, tuned LRs, T={steps} and T/2 (seed {seed})",
              labels=labels, val_only=True)
    plot_runs(chosen[::2], out / "curves_time.png", title=f"val loss against wall-clock, T={steps} (seed {seed})",
              labels=labels[::2], x="time", val_only=True)
    sophias = [out / "runs" / run_name(o, best[o], steps, seed) for o in ("sophia_g", "sophia_h") if o in best]
    if sophias:
        plot_diagnostics(sophias, out / "diagnostics.png", labels=[p.name for p in sophias])


if __name__ == "__main__":
    main()
