"""table.md: the protocol as run (seeds, validation tokens, what is searched and what is fixed and why), AdamW's
fits, the speedup table with ties and Sophia's diagnostics, the batch-size axis, the beta1 ablation, the chosen
hyperparameters and each Phase I point checked against its neighbours."""

from __future__ import annotations

import math

from sophia_train.studies.benchmark.costs import SizeInfo
from sophia_train.studies.benchmark.profiles import FIRST_MOMENT, Profile, batch_axis, feasible
from sophia_train.studies.benchmark.tuning import at_anchor
from sophia_train.studies.search import JOINT_POINTS, JOINT_STEPS
from sophia_train.studies.speedup import Interpolated


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


def _pm(mean: float, sd: float, fmt: str = ".2f") -> str:
    if math.isinf(mean):
        return "beyond fit"
    if math.isnan(mean):
        return "-"
    return f"{mean:{fmt}} ± {sd:{fmt}}" if math.isfinite(sd) else f"{mean:{fmt}}"


def _num(value: float, fmt: str) -> str:
    return f"{value:{fmt}}" if value is not None and math.isfinite(value) else "-"


def joint_sentence(profile: Profile) -> str:
    """What the joint search adds to Phase I (empty when the profile has none)."""
    if not profile.joint:
        return ""
    pairs = ", ".join(f"{a} x {b}" for a, b in profile.joint)
    return (f" After coordinate descent, {pairs} move together (both x2^k, or one x2^k and the other x2^-k, k = "
            f"{min(JOINT_STEPS)}-{max(JOINT_STEPS)}: {JOINT_POINTS} points per pair) to the best if it is better, and the "
            "x1/2 / x2 neighbour check runs again.")


def protocol_lines(profile: Profile, seeds: int) -> list[str]:
    """How the profile searched: seeds per stage, validation tokens, and every hyperparameter left fixed, with why."""
    anchor, steps = profile.anchor
    lines = ["## Protocol", "", f"Phase I at {anchor.name} / {steps} steps ({anchor.tokens_per_param(steps):.3g} tokens per "
             f"parameter), each point's loss the mean over {profile.tune_seeds} seed(s); Phase II on {profile.phase2_seeds} "
             f"seed(s) at every other retuned budget; final points on {seeds} seeds. A line search steps past the edge of its "
             f"grid up to {profile.extensions} times while the best value sits on it.{joint_sentence(profile)}", "",
             "| optimizer | searched | fixed (why) |", "| --- | --- | --- |"]
    for optim, space in profile.spaces.items():
        fixed = profile.fixed.get(optim, {})
        why = "; ".join(f"{k}: {v}" if k != "*" else f"everything else: {v}" for k, v in fixed.items() if k != "name")
        lines.append(f"| {optim} | {', '.join(space)} | {why} |")
    return lines


def speedup_lines(rows: list[dict]) -> list[str]:
    """The speedup table: one row per (size, optimizer, budget)."""
    lines = ["## Speedup over tuned AdamW", "",
             "| size | optimizer | steps | tokens | tokens/param | final val loss | Δ vs AdamW | data speedup (fit) | "
             "data speedup (interpolated) | wall-clock speedup | compute speedup | T/2 vs T | not-clipped | ‖h‖ |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | --- | --- | ---: | ---: |"]
    for r in rows:
        verdict = {True: "yes", False: "no", None: ""}[r["verdict_half_vs_full"]]
        interp = Interpolated(r["data_interp"], r.get("data_interp_bound", "="))
        delta = "" if r["optim"] == "adamw" else f"{r['delta']:+.4f}{' (tie)' if r.get('tie') else ''}"
        lines.append(f"| {r['size']} | {r['optim']} | {r['steps']} | {r['tokens']:,} | {_num(r.get('tokens_per_param'), '.3g')} | "
                     f"{_pm(r['loss'], r['loss_sd'], '.4f')} | {delta} | {_pm(r['data'], r['data_sd'])} | {interp} | "
                     f"{_num(r['wall'], '.2f')} | {_pm(r['compute'], r['compute_sd'])} | {verdict} | "
                     f"{_num(r.get('not_clipped', math.nan), '.1%')} | {_num(r.get('h_norm', math.nan), '.3g')} |")
    return lines


def batch_lines(profile: Profile, rows: list[dict]) -> list[str]:
    """The batch-size axis: each optimizer's difference to AdamW at each batch size's comparison budget."""
    points = batch_axis(profile)
    if len(points) < 2:
        return []
    at = {(r["size"], r["steps"], r["optim"]): r for r in rows}
    optims = [o for o in profile.optims if o != "adamw"]
    lines = ["## Against batch size", "", "Each batch size at its own budget (growing with the batch, so the number of steps "
             "does not collapse), re-tuned there. Δ: final val loss minus tuned AdamW's at the same batch and budget.", "",
             "| tokens/step | steps | tokens/param | AdamW loss | " + " | ".join(f"{o} Δ (data speedup)" for o in optims) + " |",
             "| ---: | ---: | ---: | --- | " + " | ".join("---" for _ in optims) + " |"]
    for size, steps in points:
        base = at.get((size.name, steps, "adamw"))
        if base is None:
            continue
        cells = []
        for o in optims:
            r = at.get((size.name, steps, o))
            cells.append("-" if r is None else f"{r['delta']:+.4f}{' (tie)' if r.get('tie') else ''} "
                                               f"({Interpolated(r['data_interp'], r.get('data_interp_bound', '='))})")
        lines.append(f"| {size.tokens_per_step:,} | {steps} | {size.tokens_per_param(steps):.3g} | "
                     f"{_pm(base['loss'], base['loss_sd'], '.4f')} | " + " | ".join(cells) + " |")
    return lines


def ablation_lines(ablation: list[dict]) -> list[str]:
    """One row per optimizer: beta1 (or Muon's momentum) at its default, LR (and rho) retuned, against it tuned."""
    if not ablation:
        return []
    lines = ["## Ablation: beta1 left at its default", "", "The protocol's effect: the same optimizer at the anchor with its "
             "first-moment coefficient at the default and the LR (and rho) retuned, against the tuned point.", "",
             "| optimizer | size/steps | first moment (default → tuned) | loss, default | loss, tuned | Δ |",
             "| --- | --- | --- | --- | --- | ---: |"]
    for a in ablation:
        key = FIRST_MOMENT[a["optim"]]
        moment = f"{1 - a['point'][key]:.4g} → {1 - a['tuned'][key]:.4g}"
        lines.append(f"| {a['optim']} | {a['size']}/{a['steps']} | {moment} | {_pm(a['loss_default'], a['sd_default'], '.4f')} | "
                     f"{_pm(a['loss_tuned'], a['sd_tuned'], '.4f')} | {a['loss_default'] - a['loss_tuned']:+.4f} |")
    return lines


def markdown(profile: Profile, rows: list[dict], fits: dict, chosen: dict, infos: dict[str, SizeInfo], seeds: int,
             tried: dict[str, list[dict]] | None = None, ablation: list[dict] | None = None) -> str:
    """table.md: the protocol, the fits with residuals, the speedup table, the batch axis, the ablation, the
    chosen hyperparameters and the Phase I neighbour check."""
    lines = [f"# Optimizer benchmark, profile `{profile.name}`", "", *([profile.note, ""] if profile.note else []),
             f"Final val loss at the end of each run (own cosine schedule), mean ± sd over {seeds} seeds. Speedup of X at "
             f"budget D = D_AdamW(loss of X) / D from AdamW's fit L(D) = a·D^-b + c per size (wall-clock: the same with "
             f"AdamW's loss against its training seconds; compute: data speedup x AdamW's FLOPs per token / X's, counting "
             f"the curvature estimator). Interpolated: the same ratio with D_AdamW read off AdamW's measured mean "
             f"losses (straight lines in log D between its budgets; only a bound outside them), which does not "
             f"depend on the fit's shape. 'T/2 vs T': X with half the budget at least as good as AdamW with all of "
             f"it (Sophia paper Sec. 3.2). '(tie)': the difference to AdamW is within 2 seed sd (pooled). Not-clipped and "
             f"‖h‖: Sophia's share of coordinates its clip left alone over the last log window, and its curvature "
             f"estimate's norm, at the end (a not-clipped share near 0 means Sophia ran as sign momentum).", "",
             *protocol_lines(profile, seeds), "", "## AdamW fits", "",
             "| size | params | a | b | c | residuals at the budgets |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, f in fits.items():
        d = f["data"]
        lines.append(f"| {name} | {infos[name].n_params / 1e6:.3g}M | {d.a:.4g} | {d.b:.4f} | {d.c:.4f} | "
                     f"{', '.join(f'{r:+.4f}' for r in d.residuals)} |")
    lines += ["", *speedup_lines(rows)]
    for extra in (batch_lines(profile, rows), ablation_lines(ablation or [])):
        lines += ["", *extra] if extra else []
    lines += ["", "## Chosen hyperparameters", "", "| optimizer | size/steps | point |", "| --- | --- | --- |"]
    for optim, points in chosen.items():
        for key, point in points.items():
            lines.append(f"| {optim} | {key} | {', '.join(f'{k}={v:.4g}' for k, v in sorted(point.items()))} |")
    if tried:
        lines += ["", "## Phase I points against their neighbours", "",
                  "Final val loss (mean over the tuning seeds, at the anchor) of each optimizer's Phase I point, and of its x1/2 "
                  "and x2 neighbours in every tuned hyperparameter (a neighbour past its range, e.g. a warmup over the whole "
                  "run, is left out). Phase I moves to a better neighbour until none is (`settle`, at most 20 moves; a point "
                  "where it stopped on that limit shows neighbours not run).", "",
                  *neighbour_rows(tried, chosen)]
    return "\n".join(lines) + "\n"
