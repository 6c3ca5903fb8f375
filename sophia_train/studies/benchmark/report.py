"""The benchmark's report: the speedups over tuned AdamW per (size, optimizer, budget), the beta1 ablation,
and table.md (``table``) with the PNGs (``plots``), all rebuilt from results.jsonl alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sophia_train.atomic import atomic_write_text
from sophia_train.studies.benchmark.costs import estimator_overhead, size_info
from sophia_train.studies.benchmark.plots import plots
from sophia_train.studies.benchmark.profiles import Profile, Size, batch_axis, run_name
from sophia_train.studies.benchmark.runner import RunResult, read_results, run_result
from sophia_train.studies.benchmark.table import markdown
from sophia_train.studies.speedup import fit_power_law, half_budget_verdict, interpolated_speedup, seed_speedups


def collect(out: Path, profile: Profile, chosen: dict) -> dict[tuple[str, str, int], list[RunResult]]:
    """``{(optim, size, steps): [RunResult per seed]}`` of the chosen points, from results.jsonl."""
    rows = {}
    for row in read_results(out / "results.jsonl"):
        rows[row["name"]] = run_result(row)
    table = {}
    for optim, points in chosen.items():
        for size in profile.sizes:
            for steps in size.steps:
                point = points.get(f"{size.name}/{steps}")
                runs = [rows.get(run_name(size, optim, point, steps, s)) for s in profile.seeds] if point else []
                table[(optim, size.name, steps)] = [r for r in runs if r is not None]
    return table


def speedup_rows(results: dict[tuple[str, str, int], list[RunResult]], sizes: list[Size], optims: list[str],
                 overhead: dict[str, float], baseline: str = "adamw") -> tuple[list[dict], dict]:
    """One row per (size, optimizer, budget): loss mean and sd, its difference to AdamW's and whether that is a tie,
    data / wall-clock / compute speedups (mean and sd over seeds), the T/2-vs-T verdict and Sophia's diagnostics;
    plus AdamW's fits per size (sizes with 3 or more budgets; the others get the interpolated speedup only)."""
    rows, fits = [], {}
    for size in sizes:
        base = {steps: results.get((baseline, size.name, steps), []) for steps in size.steps}
        if any(not runs for runs in base.values()):
            continue
        tokens = [base[s][0].tokens for s in size.steps]
        mean_loss = [float(np.mean([r.final_val for r in base[s]])) for s in size.steps]
        if len(size.steps) >= 3:
            fits[size.name] = {"data": fit_power_law(tokens, mean_loss),
                               "time": fit_power_law([float(np.mean([r.seconds for r in base[s]])) for s in size.steps], mean_loss)}
        for optim in optims:
            for steps in size.steps:
                if runs := results.get((optim, size.name, steps), []):
                    rows.append(_row(size, optim, steps, runs, base, tokens, mean_loss, fits.get(size.name), results,
                                     overhead.get(optim, 0.0)))
    return rows, fits


def _sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _row(size: Size, optim: str, steps: int, runs: list[RunResult], base: dict, tokens: list[int], mean_loss: list[float],
         fit: dict | None, results: dict, overhead: float) -> dict:
    """The speedup table's row of ``optim`` at (``size``, ``steps``) against AdamW's runs ``base``."""
    losses = [r.final_val for r in runs]
    tok = runs[0].tokens or tokens[size.steps.index(steps)]
    loss, sd = float(np.mean(losses)), _sd(losses)
    ref = [r.final_val for r in base[steps]]
    delta, ref_sd = loss - float(np.mean(ref)), _sd(ref)
    pooled = math.sqrt((sd**2 + ref_sd**2) / 2)
    data = seed_speedups(fit["data"], losses, tok) if fit else None
    wall = [fit["time"].inverse(r.final_val) / r.seconds for r in runs if fit and r.seconds and math.isfinite(r.seconds)]
    factor = 1.0 / (1.0 + overhead)  # AdamW's FLOPs per token over X's
    half = steps // 2 if steps // 2 in size.steps else None
    verdict = None
    if half is not None and results.get((optim, size.name, half)):
        verdict = half_budget_verdict(float(np.mean([r.final_val for r in results[(optim, size.name, half)]])), float(np.mean(ref)))
    interp = interpolated_speedup(tokens, mean_loss, loss, tok)
    diag = {k: float(np.nanmean(v)) if any(math.isfinite(x) for x in v) else math.nan
            for k, v in (("not_clipped", [r.not_clipped for r in runs]), ("h_norm", [r.h_norm for r in runs]))}
    return {"size": size.name, "axis": size.axis, "optim": optim, "steps": steps, "tokens": tok,
            "tokens_per_step": size.tokens_per_step, "tokens_per_param": size.tokens_per_param(steps), "seeds": len(runs),
            "loss": loss, "loss_sd": sd, "delta": delta, "tie": bool(abs(delta) < 2 * pooled) if len(runs) > 1 and len(ref) > 1 else None,
            "data": data.mean if data else math.nan, "data_sd": data.sd if data else math.nan,
            "data_interp": interp.value, "data_interp_bound": interp.bound, "wall": float(np.mean(wall)) if wall else math.nan,
            "compute": data.mean * factor if data else math.nan, "compute_sd": data.sd * factor if data else math.nan,
            "verdict_half_vs_full": verdict, **diag}


def ablation_rows(out: Path, profile: Profile, chosen: dict) -> list[dict]:
    """Per optimizer with a beta1 ablation: its loss with beta1 at the default (LR, rho retuned) against beta1 tuned."""
    runs = {row["name"]: row["final_val"] for row in read_results(out / "results.jsonl")}
    rows = []
    for optim, points in chosen.items():
        for key, point in points.items():
            if not key.startswith("ablation/"):
                continue
            size_name, steps = key.removeprefix("ablation/").split("/")
            size, tuned = next(s for s in profile.sizes if s.name == size_name), points[f"{size_name}/{steps}"]
            pick = lambda p: [runs[n] for s in profile.seeds if (n := run_name(size, optim, p, int(steps), s)) in runs]  # noqa: E731
            default, best = pick(point), pick(tuned)
            if default and best:
                rows.append({"optim": optim, "size": size_name, "steps": int(steps), "point": point, "tuned": tuned,
                             "loss_default": float(np.mean(default)), "sd_default": _sd(default),
                             "loss_tuned": float(np.mean(best)), "sd_tuned": _sd(best)})
    return rows


def report(profile: Profile, out: Path) -> str:
    """Rebuild table.md and the PNGs of ``out`` from its results; returns the table."""
    chosen = json.loads((out / "chosen.json").read_text())
    tried = json.loads((out / "tuning.json").read_text()) if (out / "tuning.json").exists() else {}
    results = collect(out, profile, chosen)
    overhead = {o: estimator_overhead(o, next(iter(p.values()))) for o, p in chosen.items()}
    infos = {s.name: size_info(profile, s) for s in profile.sizes}
    order = ["adamw", *[o for o in profile.optims if o != "adamw" and o in chosen], *[o for o in chosen if o not in profile.optims]]
    rows, fits = speedup_rows(results, list(profile.sizes), order, overhead)
    text = markdown(profile, rows, fits, chosen, infos, len(profile.seeds), tried, ablation_rows(out, profile, chosen))
    atomic_write_text(out / "table.md", text)
    atomic_write_text(out / "speedups.json", json.dumps(rows, indent=2) + "\n")
    plots(out, rows, fits, infos, tried, chosen, batch_axis(profile))
    return text
