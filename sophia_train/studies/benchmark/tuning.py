"""The benchmark's search: Phase I (every hyperparameter of each optimizer at the anchor, the smallest
size's middle budget), Phase II (the scale-sensitive ones at every other size and budget), then every seed
of each chosen point; and how many runs that plans."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from sophia_train.atomic import atomic_write_text
from sophia_train.studies.benchmark.profiles import FIRST_MOMENT, Profile, Size, feasible, first_moment_default
from sophia_train.studies.benchmark.runner import Runner, locked
from sophia_train.studies.search import JOINT_POINTS, joint_search, settle, tune, tune_runs


@dataclass
class RunCounts:
    """Distinct runs of one optimizer in each stage of a profile, before any grid extension."""

    phase1: int  # at the anchor, over the tuning seeds
    phase2_per_budget: int  # at every other retuned (size, budget), over the Phase II seeds
    retuned_budgets: int  # (size, budget) points Phase II tunes
    final_seeds: int  # the chosen points' seeds not run while tuning, over every (size, budget)
    ablation: int  # beta1 at its default, LR (and rho) retuned, then every seed (0 without an ablation)


def retuned(profile: Profile, optim: str, without: str | None = None) -> dict[str, list[float]]:
    """The Phase II keys of ``optim`` that its space has (x1/2, x1, x2 of the chosen value), but ``without``."""
    space = profile.spaces[optim]
    return {k: [0.5, 1.0, 2.0] for k in profile.phase2.get(optim, ("lr",)) if k in space and k != without}


def is_retuned(size: Size, index: int) -> bool:
    """Whether Phase II tunes ``size``'s budget ``index`` (else that budget reuses the nearest tuned one's point)."""
    return size.retune is None or index in size.retune


def ablated_key(profile: Profile, optim: str) -> str | None:
    """The first-moment key the beta1 ablation leaves at its default, when the profile runs one and searches it."""
    key = FIRST_MOMENT.get(optim)
    return key if profile.ablation and key in profile.spaces[optim] else None


def run_counts(profile: Profile, optim: str) -> RunCounts:
    """What ``run_profile`` trains for ``optim`` when no grid is extended (``tune_runs`` for both phases)."""
    anchor = profile.anchor
    points = [(s, t) for s in profile.sizes for i, t in enumerate(s.steps) if is_retuned(s, i) and (s, t) != anchor]
    n2 = tune_runs(sub) if (sub := retuned(profile, optim)) else 0
    seeds = len(profile.seeds)
    finals = sum(seeds - (profile.tune_seeds if (s, t) == anchor else profile.phase2_seeds if is_retuned(s, i) and n2 else 0)
                 for s in profile.sizes for i, t in enumerate(s.steps))
    key = ablated_key(profile, optim)
    ablation = (tune_runs(sub) * profile.phase2_seeds + seeds - profile.phase2_seeds if (sub := retuned(profile, optim, key))
                else seeds) if key else 0
    joint = JOINT_POINTS * sum(all(k in profile.spaces[optim] for k in pair) for pair in profile.joint)
    return RunCounts((tune_runs(profile.spaces[optim]) + joint) * profile.tune_seeds, n2 * profile.phase2_seeds, len(points), finals,
                     ablation)


def planned_runs(profile: Profile, optims: list[str] | None = None) -> int:
    """A first estimate of the runs a profile (or only ``optims`` of it) takes (grid extensions may add some)."""
    total = 0
    for optim in profile.spaces:
        if optims is None or optim in optims:
            n = run_counts(profile, optim)
            total += n.phase1 + n.retuned_budgets * n.phase2_per_budget + n.final_seeds + n.ablation
    return total


class Search:
    """One optimizer's search in a profile: the runs it asks for (each loss a mean over seeds) and its log."""

    def __init__(self, profile: Profile, runner: Runner, optim: str):
        self.profile, self.runner, self.optim, self.tried = profile, runner, optim, []

    def loss(self, point: dict[str, float], size: Size, steps: int, seeds: tuple[int, ...], phase: str) -> float:
        """Mean final val loss over ``seeds`` (inf if any diverged, or the point is past its range)."""
        if not feasible(point):  # a grid extended past its range (warmup over the run, beta <= 0)
            return math.inf
        losses = [self.runner.run(size, self.optim, point, steps, seed, f"{phase} {self.optim}").final_val for seed in seeds]
        mean = sum(losses) / len(losses)
        self.tried.append({"size": size.name, "steps": steps, **point, "final_val": mean,
                           **({"seed_losses": losses} if len(losses) > 1 else {})})
        return mean

    def retune(self, base: dict[str, float], size: Size, steps: int, without: str | None = None) -> dict[str, float]:
        """Phase II at (``size``, ``steps``): the Phase II keys (but ``without``) re-searched around ``base``."""
        p = self.profile
        sub = {k: [base[k] * f for f in grid] for k, grid in retuned(p, self.optim, without).items()}
        if not sub:
            return dict(base)
        seeds = p.seeds[: p.phase2_seeds]
        return {**base, **tune(sub, lambda part: self.loss({**base, **part}, size, steps, seeds, "phase II"), p.extensions)}


def _tune_optimizer(profile: Profile, runner: Runner, optim: str, later: int) -> tuple[dict, list[dict]]:
    """Phase I, Phase II, the ablation and every seed of ``optim``; returns its chosen points and tuning log."""
    search, (anchor_size, anchor_steps) = Search(profile, runner, optim), profile.anchor
    seeds1 = profile.seeds[: profile.tune_seeds]
    phase1 = lambda point: search.loss(point, anchor_size, anchor_steps, seeds1, "phase I")  # noqa: E731
    base = settle(tune(profile.spaces[optim], phase1, profile.extensions), phase1)
    if profile.joint:  # then across diagonal valleys, and a checked local optimum again
        base = settle(joint_search(base, phase1, profile.joint), phase1)
    n = run_counts(profile, optim)
    runner.replan(later + n.retuned_budgets * n.phase2_per_budget + n.final_seeds + n.ablation)
    chosen = {f"{anchor_size.name}/{anchor_steps}": base}
    for size in profile.sizes:
        tuned = {}
        for i, steps in enumerate(size.steps):
            if (size, steps) != (anchor_size, anchor_steps) and is_retuned(size, i):
                tuned[i] = search.retune(base, size, steps)
        for i, steps in enumerate(size.steps):
            if (size, steps) != (anchor_size, anchor_steps):
                nearest = min(tuned, key=lambda j: abs(j - i)) if tuned else None
                chosen[f"{size.name}/{steps}"] = tuned.get(i, tuned[nearest] if nearest is not None else dict(base))
    runner.replan(later + n.final_seeds + n.ablation)
    if key := ablated_key(profile, optim):
        default = {**base, key: first_moment_default(optim, key)}
        chosen[f"ablation/{anchor_size.name}/{anchor_steps}"] = search.retune(default, anchor_size, anchor_steps, without=key)
    for name, point in chosen.items():
        size_name, steps = name.removeprefix("ablation/").split("/")
        size = next(s for s in profile.sizes if s.name == size_name)
        for seed in profile.seeds:
            runner.run(size, optim, point, int(steps), seed, f"seeds {optim}")
    return chosen, search.tried


def run_profile(profile: Profile, out: Path, extra: list[str], optims: list[str]) -> dict:
    """Tune (Phase I and II) and run the seeds of every optimizer; returns the chosen points and results."""
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, profile, extra, planned_runs(profile, optims))
    chosen: dict[str, dict[str, dict[str, float]]] = {}
    tried: dict[str, list[dict]] = {}
    for i, optim in enumerate(optims):
        chosen[optim], tried[optim] = _tune_optimizer(profile, runner, optim, planned_runs(profile, optims[i + 1:]))
    with locked(out):  # keep what earlier calls and other workers tuned
        for name, new in (("chosen.json", chosen), ("tuning.json", tried)):
            path = out / name
            old = json.loads(path.read_text()) if path.exists() else {}
            atomic_write_text(path, json.dumps({**old, **new}, indent=2) + "\n")
    return {"chosen": chosen, "tried": tried}


def at_anchor(points: list[dict]) -> list[dict]:
    """The Phase I runs of one optimizer's tuning log: those at its first run's (size, budget)."""
    return [p for p in points if (p["size"], p["steps"]) == (points[0]["size"], points[0]["steps"])]
