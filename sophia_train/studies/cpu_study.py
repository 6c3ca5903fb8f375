"""A CPU-scale, honest optimizer comparison: tune each optimizer for T steps, then run T and T/2.

Tuning is coordinate descent over each optimizer's search space (``SPACES``: the LR for all, and
rho for Sophia-G, whose effective rho moved when the GNB scale was fixed): a line search over one
hyperparameter at a time with the others held at their current best, on a 3-point grid (factors of 2)
extended by x2 while the best value sits on its edge; with two or more hyperparameters, a second pass
searches {v/2, v, 2v} around each current best. All tuning runs use seed 0 and T steps; the chosen
point then runs at T with the other seeds and at T/2 (its own cosine schedule) with every seed. The
paper's Sec. 3.2 test is applied by ``scripts/compare_runs.py``: does optimizer S at T/2 reach AdamW's
loss at T? Everything uses the tiny GPT on the byte-level default corpus.

    python scripts/cpu_benchmark.py --out results/cpu_benchmark            # ~45 min on 2 cores
    python scripts/cpu_benchmark.py --optims sophia_g                      # retune one, keep the others
    python scripts/compare_runs.py results/cpu_benchmark --baseline adamw  # table + verdicts

Finished runs (a metrics.jsonl with an ``end`` record) are skipped, so an interrupted benchmark
resumes; ``best.json`` holds the chosen point of every optimizer tuned so far, ``tuning.json`` every
point tried and its final val loss.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sophia_train.atomic import atomic_write_text
from sophia_train.compose import compose_config
from sophia_train.metrics import read_metrics
from sophia_train.plotting import plot_diagnostics, plot_runs
from sophia_train.studies.compare_runs import find_runs, markdown_report
from sophia_train.studies.search import tune
from sophia_train.trainer import Trainer

SPACES = {  # per optimizer: hyperparameter -> first grid (a factor of 2 apart, around a sensible tiny-model range)
    "adamw": {"lr": [1e-3, 2e-3, 4e-3]},
    "lion": {"lr": [2.5e-4, 5e-4, 1e-3]},
    "sophia_g": {"lr": [3e-4, 6e-4, 1.2e-3], "rho": [0.025, 0.05, 0.1]},
    "sophia_h": {"lr": [3e-4, 6e-4, 1.2e-3]},
    "s3": {"lr": [5e-4, 1e-3, 2e-3]},
}



def run_name(optim: str, point: dict[str, float], steps: int, seed: int) -> str:
    """Folder name of one run: optimizer, LR, other tuned hyperparameters, horizon and seed."""
    extra = "".join(f"-{k}{v:g}" for k, v in sorted(point.items()) if k != "lr")
    return f"{optim}-lr{point['lr']:g}{extra}-T{steps}-s{seed}"


def final_val(run_dir: Path) -> float | None:
    """Final val loss of a finished run, None if it did not finish."""
    f = run_dir / "metrics.jsonl"
    if not f.exists():
        return None
    rows = read_metrics(f)
    end = [r for r in rows if r["kind"] == "end"]
    return end[-1]["final_val_loss"] if end else None


def train(out: Path, optim: str, point: dict[str, float], steps: int, seed: int, common: list[str]) -> float:
    """Run (or reuse) one training run; returns its final val loss (inf if it diverged)."""
    d = out / "runs" / run_name(optim, point, steps, seed)
    done = final_val(d)
    if done is not None:
        return done
    cfg = compose_config([
        "+model=tiny", f"optim={optim}", *(f"optim.{k}={v}" for k, v in sorted(point.items())), f"train.max_steps={steps}",
        f"train.seed={seed}", f"train.out_dir={d}", "train.overwrite=true", "train.plot=false",
        f"train.warmup_steps={max(1, steps // 20)}", f"train.eval_interval={max(1, steps // 16)}", *common,
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


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/cpu_benchmark.py``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/cpu_benchmark")
    ap.add_argument("--steps", type=int, default=800, help="T; the short runs take T/2")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--optims", nargs="+", default=list(SPACES), choices=list(SPACES))
    ap.add_argument("--data-dir", default=None, help="prepared dataset (default: the corpus config's folder)")
    ap.add_argument("--report-only", action="store_true", help="only rebuild table.md and the PNGs from finished runs")
    args = ap.parse_args(argv)
    out = Path(args.out)
    common = ["train.batch_size=8", "train.eval_iters=40", "train.log_interval=25", "train.threads=2"]
    if args.data_dir:
        common.append(f"data.dir={args.data_dir}")
    best_file, tuning_file = out / "best.json", out / "tuning.json"
    best = json.loads(best_file.read_text()) if best_file.exists() else {}
    tried = json.loads(tuning_file.read_text()) if tuning_file.exists() else {}
    if not args.report_only:
        for optim in args.optims:
            tried[optim] = []

            def loss_of(point, optim=optim):
                loss = train(out, optim, point, args.steps, args.seeds[0], common)
                tried[optim].append({**point, "final_val_loss": loss})
                return loss

            best[optim] = tune(SPACES[optim], loss_of)
            print(f"{optim}: chosen {best[optim]}", flush=True)
        for optim in args.optims:
            for seed in args.seeds:
                train(out, optim, best[optim], args.steps, seed, common)
                train(out, optim, best[optim], args.steps // 2, seed, common)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(best_file, json.dumps(best, indent=2) + "\n")
        atomic_write_text(tuning_file, json.dumps(tried, indent=2) + "\n")
        print(f"chosen: {best}")
    report(out, args.steps, best, args.seeds[0])


def report(out: Path, steps: int, best: dict[str, dict[str, float]], seed: int) -> None:
    """table.md (Sec. 3.2 verdicts), curves by step and by wall-clock, Sophia diagnostics."""

    table = markdown_report(find_runs([out / "runs"]), "adamw", steps)
    atomic_write_text(out / "table.md", table + "\n")
    print(table)

    def label(point: dict[str, float]) -> str:
        return " ".join(f"{k}={v:g}" for k, v in sorted(point.items()))

    chosen = [out / "runs" / run_name(o, pt, T, seed) for o, pt in best.items() for T in (steps, steps // 2)]
    labels = [f"{o} {label(pt)} T={T}" for o, pt in best.items() for T in (steps, steps // 2)]
    plot_runs(chosen, out / "curves.png", title=f"tiny GPT, byte-level corpus: val loss, tuned, T={steps} and T/2 (seed {seed})",
              labels=labels, val_only=True)
    plot_runs(chosen[::2], out / "curves_time.png", title=f"val loss against wall-clock, T={steps} (seed {seed})",
              labels=labels[::2], x="time", val_only=True)
    sophias = [out / "runs" / run_name(o, best[o], steps, seed) for o in ("sophia_g", "sophia_h") if o in best]
    if sophias:
        plot_diagnostics(sophias, out / "diagnostics.png", labels=[p.name for p in sophias])

