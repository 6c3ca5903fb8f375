"""The Sophia paper's comparison methodology (Sec. 3.2) over logged runs, as Markdown tables.

"S is 2x faster than A" holds when S run for T/2 steps (its own schedule) reaches a loss <= A's loss
after T steps with A's LR tuned for T. ``t_half_verdict`` applies exactly that test to the mean
final val loss over seeds, and also reports when S's val curve first matched A's final loss, in
steps, compute and wall-clock, relative to A's whole run.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from sophia_train.atomic import atomic_write_text
from sophia_train.config.paper import PAPER_STEPS, paper_val_loss
from sophia_train.curvature import ESTIMATORS
from sophia_train.metrics import read_metrics

# Optimizer hyperparameters besides the LR that a tuning run may vary: runs that differ in one of
# these are different groups (the same LR with another rho is another configuration, not another seed).
TUNED_HPARAMS = ("rho",)


@dataclass
class Run:
    """One training run's identity and val-loss curve, read from its folder."""

    path: Path
    optim: str
    lr: float
    max_steps: int
    seed: int
    tokens_per_step: int
    overhead: float  # extra compute of the curvature estimator, as a fraction of a step
    hparams: tuple[tuple[str, float], ...] = ()  # TUNED_HPARAMS present in the run's optimizer config
    evals: list[tuple[int, float, float]] = field(default_factory=list)  # (step, val_loss, elapsed_s)
    final_val: float = math.nan
    wall_s: float = math.nan
    model: str = ""

    @property
    def label(self) -> str:
        extra = "".join(f" {k}={v:g}" for k, v in self.hparams)
        return f"{self.optim} lr={self.lr:g}{extra} T={self.max_steps}"


def load_run(path: str | os.PathLike) -> Run:
    """Read ``config.yaml`` and ``metrics.jsonl`` of a run folder."""
    path = Path(path)
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    rows = read_metrics(path / "metrics.jsonl")
    o, t = cfg["optim"], cfg["train"]
    est = o.get("estimator")
    overhead = 0.0
    if est and est != "none":
        cost = ESTIMATORS[est].cost if est in ESTIMATORS else 1.0
        overhead = cost * o.get("hess_fraction", 1.0) / o.get("hess_interval", 1)
    start = next((r for r in rows if r["kind"] == "start"), {})
    train_elapsed = {r["step"]: r["elapsed_s"] for r in rows if r["kind"] == "train" and "elapsed_s" in r}
    evals = []
    for r in rows:
        if r["kind"] == "eval":
            elapsed = r.get("elapsed_s", train_elapsed.get(r["step"], 0.0 if r["step"] == 0 else math.nan))
            evals.append((r["step"], r["val_loss"], elapsed))
    end = [r for r in rows if r["kind"] == "end"]
    hparams = tuple((k, float(o[k])) for k in TUNED_HPARAMS if k in o)
    run = Run(path, o["name"], float(o["lr"]), int(t["max_steps"]), int(t["seed"]), int(start.get("tokens_per_step", 0)), overhead,
              hparams, evals, model=str((cfg.get("model") or {}).get("name", "")))
    if end:
        run.final_val = float(end[-1]["final_val_loss"])
        run.wall_s = float(end[-1].get("wall_s", math.nan))
    elif evals:
        run.final_val = evals[-1][1]
    return run


def find_runs(roots: Iterable[str | os.PathLike]) -> list[Run]:
    """Every run folder (one holding config.yaml and metrics.jsonl) under ``roots``."""
    runs = []
    for root in roots:
        for cfg in sorted(Path(root).rglob("config.yaml")):
            if (cfg.parent / "metrics.jsonl").exists():
                runs.append(load_run(cfg.parent))
    return runs


def first_match(run: Run, target: float) -> tuple[int, float] | None:
    """(step, elapsed_s) of the first eval whose val loss is <= ``target``; None if never."""
    for step, loss, elapsed in run.evals:
        if step > 0 and loss <= target:
            return step, elapsed
    return None


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.mean(xs) if xs else math.nan


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def t_half_verdict(baseline: list[Run], candidate: list[Run], fallback: list[Run] | None = None) -> dict:
    """Sec. 3.2 test: baseline runs at T (seeds), candidate runs at T/2 (seeds) -> verdict and ratios.

    The first-match ratios come from the candidate's T/2 curves; where none of them reaches the
    baseline's final loss, from ``fallback`` (the candidate's T-step runs), marked ``match_from``.
    """
    a_final = _mean([r.final_val for r in baseline])
    s_final = _mean([r.final_val for r in candidate])
    T = baseline[0].max_steps
    a_tokens = T * baseline[0].tokens_per_step
    a_compute = a_tokens * (1 + baseline[0].overhead)
    a_wall = _mean([r.evals[-1][2] for r in baseline if r.evals])
    def ratios(runs: list[Run]):
        steps, compute, wall = [], [], []
        for r in runs:
            hit = first_match(r, a_final)
            if hit is None:
                continue
            steps.append(hit[0] / T)
            compute.append(hit[0] * r.tokens_per_step * (1 + r.overhead) / a_compute)
            wall.append(hit[1] / a_wall if a_wall else math.nan)
        return steps, compute, wall

    match_from, pool = "T/2", candidate
    steps, compute, wall = ratios(candidate)
    if not steps and fallback:
        match_from, pool = "T", fallback
        steps, compute, wall = ratios(fallback)
    return {
        "baseline": baseline[0].label, "candidate": candidate[0].label,
        "baseline_final": a_final, "baseline_sd": _sd([r.final_val for r in baseline]),
        "candidate_final": s_final, "candidate_sd": _sd([r.final_val for r in candidate]),
        "reached": s_final <= a_final, "seeds_matched": f"{len(steps)}/{len(pool)}", "match_from": match_from,
        "steps_ratio": _mean(steps), "compute_ratio": _mean(compute), "wall_ratio": _mean(wall),
    }


def group_runs(runs: list[Run]) -> dict[tuple, list[Run]]:
    """Runs keyed by (optimizer, lr, max_steps, tuned hyperparameters), seeds together."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.optim, r.lr, r.max_steps, r.hparams), []).append(r)
    return groups


def best_groups(runs: list[Run], steps: int) -> dict[str, list[Run]]:
    """For each optimizer, its chosen LR group at ``steps``: among the groups with the most seeds
    (a tuning grid gives its winner the extra seeds), the lowest mean final val loss. Comparing a
    one-seed grid point with a several-seed mean would favour the lucky single seed."""
    candidates: dict[str, list[list[Run]]] = {}
    for (optim, _, T, _), rs in group_runs(runs).items():
        if T == steps:
            candidates.setdefault(optim, []).append(rs)
    best = {}
    for optim, groups in candidates.items():
        most = max(len(g) for g in groups)
        best[optim] = min((g for g in groups if len(g) == most), key=lambda g: _mean([r.final_val for r in g]))
    return best


def paper_table(runs: list[Run]) -> list[str]:
    """Markdown rows setting each group's mean final val loss beside the Sophia paper's Fig. 4 value for its
    (model, optimizer) at 100K steps; groups of another length are marked, cells the paper lacks say so."""
    lines = [f"| model | optimizer | lr | steps | seeds | final val loss (mean) | paper Fig. 4 at {PAPER_STEPS // 1000}K steps | difference |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (optim, lr, T, _), rs in sorted(group_runs(runs).items()):
        ref, mean = paper_val_loss(rs[0].model, optim), _mean([r.final_val for r in rs])
        if ref is None:
            lines.append(f"| {rs[0].model} | {optim} | {lr:g} | {T} | {len(rs)} | {mean:.4f} | (no such cell) | — |")
            continue
        note = "" if T == PAPER_STEPS else f" (at {T} steps, not {PAPER_STEPS})"
        lines.append(f"| {rs[0].model} | {optim} | {lr:g} | {T} | {len(rs)} | {mean:.4f} | {ref:.3f} | {mean - ref:+.3f}{note} |")
    return lines


def markdown_report(runs: list[Run], baseline: str, steps: int, paper: bool = False) -> str:
    """Tables: every (optimizer, LR, T) group's final loss (with ``paper``, beside the Sophia paper's Fig. 4
    value), then the T/2-vs-T verdict for each optimizer."""
    lines = ["| optimizer | lr | other hyperparameters | steps | seeds | final val loss (mean ± sd) |", "| --- | --- | --- | --- | --- | --- |"]
    for (optim, lr, T, hp), rs in sorted(group_runs(runs).items()):
        finals = [r.final_val for r in rs]
        other = ", ".join(f"{k}={v:g}" for k, v in hp)
        lines.append(f"| {optim} | {lr:g} | {other} | {T} | {len(rs)} | {_mean(finals):.4f} ± {_sd(finals):.4f} |")
    if paper:
        lines += ["", *paper_table(runs)]
    best_T, best_half = best_groups(runs, steps), best_groups(runs, steps // 2)
    if baseline not in best_T:
        return "\n".join(lines + ["", f"(no {baseline} runs at T={steps}: no verdicts)"])
    base = best_T[baseline]
    lines += [
        "",
        f"Sec. 3.2 test against {base[0].label} (best LR at T={steps}; means over seeds). 'Reached' compares the "
        f"candidate's mean final loss at T/2 with the baseline's at T. First match: where the candidate's val curve "
        f"first got to the baseline's final loss, as a fraction of the baseline's steps, compute (tokens x estimator "
        f"overhead) and wall-clock; from its T/2 runs, else its T runs.",
        "",
        f"| candidate at T/2 = {steps // 2} | its final val | {baseline} final at T | reached? "
        "| first match: steps | compute | wall-clock | seeds matching |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for optim, rs in sorted(best_half.items()):
        at_T = best_T.get(optim, rs)[0]
        same_lr = [r for r in rs if (r.lr, r.hparams) == (at_T.lr, at_T.hparams)] or rs
        v = t_half_verdict(base, same_lr, fallback=best_T.get(optim))
        fmt = lambda x: "—" if math.isnan(x) else f"{x:.2f}"  # noqa: E731
        lines.append(
            f"| {v['candidate']} | {v['candidate_final']:.4f} ± {v['candidate_sd']:.4f} | {v['baseline_final']:.4f} ± {v['baseline_sd']:.4f} | "
            f"{'yes' if v['reached'] else 'no'} | {fmt(v['steps_ratio'])} | {fmt(v['compute_ratio'])} | {fmt(v['wall_ratio'])} | "
            f"{v['seeds_matched']} ({v['match_from']} runs) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/compare_runs.py``."""
    ap = argparse.ArgumentParser(description="The paper's T/2-vs-T comparison (Sec. 3.2) over run folders, printed as Markdown.")
    ap.add_argument("roots", nargs="+", help="folders searched for runs (config.yaml + metrics.jsonl)")
    ap.add_argument("--baseline", default="adamw", help="optimizer A, run for T steps")
    ap.add_argument("--steps", type=int, required=True, help="T; candidates are read at T/2")
    ap.add_argument("-o", "--out", help="also write the report to this file")
    ap.add_argument("--paper", action="store_true", help="add the Sophia paper's Fig. 4 final losses beside each group's")
    args = ap.parse_args(argv)
    runs = find_runs(args.roots)
    if not runs:
        raise SystemExit(f"no runs (config.yaml + metrics.jsonl) under {', '.join(args.roots)}")
    report = markdown_report(runs, args.baseline, args.steps, paper=args.paper)
    print(report)
    if args.out:
        atomic_write_text(Path(args.out), report + "\n")
