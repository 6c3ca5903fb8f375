"""The benchmark's report: the speedups over tuned AdamW per (size, optimizer, budget), table.md, and
the check of each Phase I point against its neighbours; rebuilt from results.jsonl alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sophia_train.atomic import atomic_write_text
from sophia_train.studies.benchmark.costs import SizeInfo, estimator_overhead, size_info
from sophia_train.studies.benchmark.plots import plots
from sophia_train.studies.benchmark.profiles import Profile, Size, feasible, run_name
from sophia_train.studies.benchmark.runner import RunResult, read_results
from sophia_train.studies.benchmark.tuning import at_anchor
from sophia_train.studies.speedup import Interpolated, fit_power_law, half_budget_verdict, interpolated_speedup, seed_speedups


def neighbour_rows(tried: dict[str, list[dict]], chosen: dict) -> list[str]:
    """table.md's check of each Phase I point against its x1/2 and x2 neighbours (from ``tuning.json``)."""
    lines = ["| optimizer | loss at the Phase I point | neighbours run | best neighbour | local optimum |", "| --- | ---: | ---: | --- | --- |"]
    for optim, points in tried.items():
        if not points or optim not in chosen:
            continue
        best = next(iter(chosen[optim].values()))
        at = at_anchor(points)
        loss = {tuple(sorted((k, v) for k, v in p.items() if k in best)): p["final_val"] for p in at}
        centre = loss.get(tuple(sorted(best.items())))
        if centre is None:
            continue
        near = {f"{k} x{f:g}": {**best, k: best[k] * f} for k in best for f in (0.5, 2.0)}
        near = {name: p for name, p in near.items() if feasible(p)}
        ran = {name: loss[key] for name, p in near.items() if (key := tuple(sorted(p.items()))) in loss}
        top = min(ran, key=ran.get) if ran else None
        delta = ran[top] - centre if top else math.nan
        verdict = "no" if delta < 0 else "yes" if len(ran) == len(near) else f"not shown ({len(near) - len(ran)} not run)"
        lines.append(f"| {optim} | {centre:.4f} | {len(ran)} of {len(near)} | {f'{top} ({delta:+.4f})' if top else '-'} | {verdict} |")
    return lines


def collect(out: Path, profile: Profile, chosen: dict) -> dict[tuple[str, str, int], list[RunResult]]:
    """``{(optim, size, steps): [RunResult per seed]}`` of the chosen points, from results.jsonl."""
    rows = {}
    for row in read_results(out / "results.jsonl"):
        rows[row["name"]] = RunResult(row["final_val"], row["seconds"], row["tokens"])
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
    """One row per (size, optimizer, budget): loss mean and sd, data / wall-clock / compute speedups
    (mean and sd over seeds) and the T/2-vs-T verdict; plus AdamW's fits per size."""
    rows, fits = [], {}
    for size in sizes:
        base = {steps: results.get((baseline, size.name, steps), []) for steps in size.steps}
        if any(not runs for runs in base.values()):
            continue
        tokens = [base[s][0].tokens for s in size.steps]
        mean_loss = [float(np.mean([r.final_val for r in base[s]])) for s in size.steps]
        data_fit = fit_power_law(tokens, mean_loss)
        time_fit = fit_power_law([float(np.mean([r.seconds for r in base[s]])) for s in size.steps], mean_loss)
        fits[size.name] = {"data": data_fit, "time": time_fit}
        for optim in optims:
            for steps in size.steps:
                runs = results.get((optim, size.name, steps), [])
                if not runs:
                    continue
                losses = [r.final_val for r in runs]
                tok = runs[0].tokens or tokens[size.steps.index(steps)]
                data = seed_speedups(data_fit, losses, tok)
                wall = [time_fit.inverse(r.final_val) / r.seconds for r in runs if r.seconds and math.isfinite(r.seconds)]
                factor = 1.0 / (1.0 + overhead.get(optim, 0.0))  # AdamW's FLOPs per token over X's
                half = steps // 2 if steps // 2 in size.steps else None
                verdict = None
                if half is not None and results.get((optim, size.name, half)):
                    verdict = half_budget_verdict(float(np.mean([r.final_val for r in results[(optim, size.name, half)]])),
                                                  float(np.mean([r.final_val for r in base[steps]])))
                interp = interpolated_speedup(tokens, mean_loss, float(np.mean(losses)), tok)
                rows.append({"size": size.name, "optim": optim, "steps": steps, "tokens": tok,
                             "loss": float(np.mean(losses)), "loss_sd": float(np.std(losses, ddof=1)) if len(losses) > 1 else 0.0,
                             "data": data.mean, "data_sd": data.sd, "data_interp": interp.value, "data_interp_bound": interp.bound,
                             "wall": float(np.mean(wall)) if wall else math.nan,
                             "compute": data.mean * factor, "compute_sd": data.sd * factor, "verdict_half_vs_full": verdict})
    return rows, fits


def _pm(mean: float, sd: float, fmt: str = ".2f") -> str:
    if math.isinf(mean):
        return "beyond fit"
    return f"{mean:{fmt}} ± {sd:{fmt}}" if math.isfinite(sd) else f"{mean:{fmt}}"


def markdown(profile: Profile, rows: list[dict], fits: dict, chosen: dict, infos: dict[str, SizeInfo], seeds: int,
             tried: dict[str, list[dict]] | None = None) -> str:
    """table.md: the fits with residuals, the speedup table and the chosen hyperparameters."""

    lines = [f"# Optimizer benchmark, profile `{profile.name}`", "",
             f"Final val loss at the end of each run (own cosine schedule), mean ± sd over {seeds} seeds. Speedup of X at "
             f"budget D = D_AdamW(loss of X) / D from AdamW's fit L(D) = a·D^-b + c per size (wall-clock: the same with "
             f"AdamW's loss against its training seconds; compute: data speedup x AdamW's FLOPs per token / X's, counting "
             f"the curvature estimator). Interpolated: the same ratio with D_AdamW read off AdamW's measured mean "
             f"losses (straight lines in log D between its budgets; only a bound outside them), which does not "
             f"depend on the fit's shape. 'T/2 vs T': X with half the budget at least as good as AdamW with all of "
             f"it (Sophia paper Sec. 3.2).", "", "## AdamW fits", "",
             "| size | params | a | b | c | residuals at the budgets |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, f in fits.items():
        d = f["data"]
        lines.append(f"| {name} | {infos[name].n_params / 1e6:.2f}M | {d.a:.4g} | {d.b:.4f} | {d.c:.4f} | "
                     f"{', '.join(f'{r:+.4f}' for r in d.residuals)} |")
    lines += ["", "## Speedup over tuned AdamW", "",
              "| size | optimizer | steps | tokens | final val loss | data speedup (fit) | data speedup (interpolated) | "
              "wall-clock speedup | compute speedup | T/2 vs T |",
              "| --- | --- | ---: | ---: | --- | --- | ---: | ---: | --- | --- |"]
    for r in rows:
        verdict = {True: "yes", False: "no", None: ""}[r["verdict_half_vs_full"]]
        interp = Interpolated(r["data_interp"], r.get("data_interp_bound", "="))
        lines.append(f"| {r['size']} | {r['optim']} | {r['steps']} | {r['tokens']:,} | {_pm(r['loss'], r['loss_sd'], '.4f')} | "
                     f"{_pm(r['data'], r['data_sd'])} | {interp} | {r['wall']:.2f} | {_pm(r['compute'], r['compute_sd'])} | {verdict} |")
    lines += ["", "## Chosen hyperparameters", "", "| optimizer | size/steps | point |", "| --- | --- | --- |"]
    for optim, points in chosen.items():
        for key, point in points.items():
            lines.append(f"| {optim} | {key} | {', '.join(f'{k}={v:.4g}' for k, v in sorted(point.items()))} |")
    if tried:
        lines += ["", "## Phase I points against their neighbours", "",
                  "Final val loss (seed 0, at the anchor) of each optimizer's Phase I point, and of its x1/2 and x2 neighbours "
                  "in every tuned hyperparameter (a neighbour past its range, e.g. a warmup over the whole run, is left "
                  "out). Phase I moves to a better neighbour until none is (`settle`, at most 20 moves; a point where it "
                  "stopped on that limit shows neighbours not run).", "",
                  *neighbour_rows(tried, chosen)]
    return "\n".join(lines) + "\n"


def report(profile: Profile, out: Path) -> str:
    """Rebuild table.md and the PNGs of ``out`` from its results; returns the table."""
    chosen = json.loads((out / "chosen.json").read_text())
    tried = json.loads((out / "tuning.json").read_text()) if (out / "tuning.json").exists() else {}
    results = collect(out, profile, chosen)
    overhead = {o: estimator_overhead(o, next(iter(p.values()))) for o, p in chosen.items()}
    infos = {s.name: size_info(profile, s) for s in profile.sizes}
    order = ["adamw", *[o for o in profile.optims if o != "adamw" and o in chosen], *[o for o in chosen if o not in profile.optims]]
    rows, fits = speedup_rows(results, list(profile.sizes), order, overhead)
    text = markdown(profile, rows, fits, chosen, infos, len(profile.seeds), tried)
    atomic_write_text(out / "table.md", text)
    atomic_write_text(out / "speedups.json", json.dumps(rows, indent=2) + "\n")
    plots(out, rows, fits, infos, tried, chosen)
    return text
