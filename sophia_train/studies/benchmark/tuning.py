"""The benchmark's search: Phase I (every hyperparameter of each optimizer at the anchor, the smallest
size's middle budget), Phase II (the scale-sensitive ones at every other size and budget), then every seed
of each chosen point; and how many runs that plans."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from sophia_train.atomic import atomic_write_text
from sophia_train.studies.benchmark.profiles import Profile, feasible
from sophia_train.studies.benchmark.runner import Runner, locked
from sophia_train.studies.search import settle, tune, tune_runs


@dataclass
class RunCounts:
    """Distinct runs of one optimizer in each stage of a profile, before any grid extension."""

    phase1: int  # at the anchor
    phase2_per_budget: int  # at every other (size, budget)
    seeds_per_budget: int  # the chosen point's other seeds, at every (size, budget)


def run_counts(profile: Profile, optim: str) -> RunCounts:
    """What ``run_profile`` trains for ``optim`` when no grid is extended (``tune_runs`` for both phases)."""
    space = profile.spaces[optim]
    retuned = {k: [0.5, 1.0, 2.0] for k in profile.phase2.get(optim, ("lr",)) if k in space}
    return RunCounts(tune_runs(space), tune_runs(retuned) if retuned else 0, len(profile.seeds) - 1)


def planned_runs(profile: Profile, optims: list[str] | None = None) -> int:
    """A first estimate of the runs a profile (or only ``optims`` of it) takes (grid extensions may add some)."""
    budgets = profile.n_budgets
    total = 0
    for optim in profile.spaces:
        if optims is None or optim in optims:
            n = run_counts(profile, optim)
            total += n.phase1 + (budgets - 1) * n.phase2_per_budget + budgets * n.seeds_per_budget
    return total


def run_profile(profile: Profile, out: Path, extra: list[str], optims: list[str]) -> dict:
    """Tune (Phase I and II) and run the seeds of every optimizer; returns the chosen points and results."""
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, profile, extra, planned_runs(profile, optims))
    first = profile.sizes[0]
    anchor = (first.name, first.steps[len(first.steps) // 2])
    budgets = profile.n_budgets
    chosen: dict[str, dict[str, dict[str, float]]] = {}
    tried: dict[str, list[dict]] = {}
    for optim in optims:
        tried[optim] = []

        def loss_of(point, size=first, steps=anchor[1], optim=optim, phase="phase I"):
            if not feasible(point):  # a grid extended past its range (warmup over the run, beta <= 0)
                return math.inf
            r = runner.run(size, optim, point, steps, profile.seeds[0], f"{phase} {optim}")
            tried[optim].append({"size": size.name, "steps": steps, **point, "final_val": r.final_val})
            return r.final_val

        base = settle(tune(profile.spaces[optim], loss_of), loss_of)
        n, later = run_counts(profile, optim), planned_runs(profile, optims[optims.index(optim) + 1:])
        runner.replan(later + (budgets - 1) * n.phase2_per_budget + budgets * n.seeds_per_budget)
        chosen[optim] = {f"{anchor[0]}/{anchor[1]}": base}
        for size in profile.sizes:
            for steps in size.steps:
                key = f"{size.name}/{steps}"
                if (size.name, steps) == anchor:
                    continue
                sub = {k: [base[k] / 2, base[k], base[k] * 2] for k in profile.phase2.get(optim, ("lr",)) if k in base}

                def loss_of2(part, size=size, steps=steps, optim=optim):
                    return loss_of({**base, **part}, size, steps, optim, "phase II")

                chosen[optim][key] = {**base, **tune(sub, loss_of2)} if sub else dict(base)
        runner.replan(later + budgets * n.seeds_per_budget)
        for size in profile.sizes:
            for steps in size.steps:
                for seed in profile.seeds:
                    runner.run(size, optim, chosen[optim][f"{size.name}/{steps}"], steps, seed, f"seeds {optim}")
    with locked(out):  # keep what earlier calls and other workers tuned
        for name, new in (("chosen.json", chosen), ("tuning.json", tried)):
            path = out / name
            old = json.loads(path.read_text()) if path.exists() else {}
            atomic_write_text(path, json.dumps({**old, **new}, indent=2) + "\n")
    return {"chosen": chosen, "tried": tried}


def at_anchor(points: list[dict]) -> list[dict]:
    """The Phase I runs of one optimizer's tuning log: those at its first run's (size, budget)."""
    return [p for p in points if (p["size"], p["steps"]) == (points[0]["size"], points[0]["steps"])]
