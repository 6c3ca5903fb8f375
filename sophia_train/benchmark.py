"""The fair optimizer benchmark: every optimizer tuned, compared at the end of training across model
sizes and data budgets, speedups over AdamW as the Sophia paper and Wen et al. (2025) define them.

A profile (``PROFILES``) names the model sizes, the budgets of each (optimizer steps at a fixed batch,
each run with its own full warmup + cosine schedule), the seeds, the optimizers and their search spaces.

1. Phase I: coordinate descent (``cpu_benchmark.tune``: a line search per hyperparameter, the grid
   extended while the best sits on its edge, a second pass at v/2, v, 2v) over each optimizer's own
   hyperparameters at the smallest size and its middle budget, then ``settle``: move to a better
   x1/2 or x2 neighbour until none is, so the point is a checked local optimum. Betas are searched as
   1 - beta (log scale), the warmup as a fraction of the run.
2. Phase II: at every other (size, budget), only the scale-sensitive hyperparameters (``phase2``: the
   LR, and rho for Sophia) are searched again, around the Phase I point.
3. The chosen point of every (optimizer, size, budget) runs with every seed; the reports use the
   mean and sd over seeds. ``speedup.py`` fits AdamW's L(D) per size and turns each loss into the
   data, wall-clock and compute AdamW would need.

Every run is an ordinary training run in ``OUT/runs/<name>``; ``OUT/results.jsonl`` keeps each
finished run's final val loss, training seconds and tokens, so re-invoking skips finished runs, and a
run interrupted mid-way continues from its checkpoint. ``OUT/table.md`` and the PNGs are rebuilt from
results at the end (``--report-only`` rebuilds them alone).

    python scripts/optimizer_benchmark.py --profile quick --out runs/benchmark_quick   # a few minutes
    python scripts/optimizer_benchmark.py --profile cpu --out results/benchmark_cpu
    python scripts/optimizer_benchmark.py --profile gpu_small --estimate                # GPU-hours, no runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sophia_train.atomic import atomic_write_text
from sophia_train.compose import compose_config
from sophia_train.cpu_benchmark import final_val, tune
from sophia_train.errors import ConfigError, StoppedBySignal, TrainingDiverged
from sophia_train.metrics import format_duration, read_metrics
from sophia_train.stop_signals import EXIT_STOPPED, die_with_parent


@dataclass(frozen=True)
class Size:
    """A model size: its overrides and its budgets (optimizer steps; tokens = steps x tokens per step)."""

    name: str
    overrides: tuple[str, ...]
    steps: tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """What one benchmark runs (see the module docstring)."""

    name: str
    base: tuple[str, ...]  # overrides every run shares (data, batch, evaluation)
    sizes: tuple[Size, ...]
    seeds: tuple[int, ...]
    spaces: dict[str, dict[str, list[float]]]  # Phase I: optimizer -> hyperparameter -> first grid
    phase2: dict[str, tuple[str, ...]] = field(default_factory=dict)  # retuned at every other (size, budget)

    @property
    def optims(self) -> list[str]:
        return list(self.spaces)

    @property
    def n_budgets(self) -> int:
        """(size, budget) points over all sizes."""
        return sum(len(s.steps) for s in self.sizes)


_BASE_CPU = ("train.batch_size=8", "train.seq_len=64", "train.eval_iters=8", "train.log_interval=50", "train.plot=false",
             "train.grad_clip=1.0")
_CPU_STEPS = (100, 200, 400, 800)


def _five(center: float) -> list[float]:
    """A log grid of 5 points, x2 apart, around ``center``."""
    return [center * 2.0**k for k in (-2, -1, 0, 1, 2)]


def _own_spaces(lr: dict[str, float], warmup: list[float]) -> dict[str, dict[str, list[float]]]:
    """Phase I search spaces: every optimizer's own hyperparameters around its usual values, the LR (and
    Sophia's rho) on 5 points since the loss is noisy there, the rest on 3; the warmup fraction for all."""
    wd = [0.05, 0.1, 0.2]
    own = {
        "adamw": {"one_minus_beta2": [0.025, 0.05, 0.1], "weight_decay": wd},
        "lion": {"one_minus_beta2": [0.01, 0.02, 0.04], "weight_decay": [0.1, 0.2, 0.4]},
        "sophia_g": {"rho": _five(0.05), "hess_interval": [5, 10, 20], "one_minus_beta2": [0.005, 0.01, 0.02],
                     "weight_decay": [0.1, 0.2, 0.4]},
        "sophia_h": {"rho": _five(0.01), "hess_interval": [5, 10, 20], "one_minus_beta2": [0.005, 0.01, 0.02],
                     "weight_decay": [0.1, 0.2, 0.4]},
        "s3": {"one_minus_beta": [0.025, 0.05, 0.1], "p": [2, 3, 4], "weight_decay": wd},
        "muon": {"weight_decay": wd},
        "soap": {"one_minus_beta2": [0.025, 0.05, 0.1], "weight_decay": [0.005, 0.01, 0.02]},
        "kron": {"weight_decay": [0.025, 0.05, 0.1]},
    }
    return {o: {"lr": _five(lr[o]), **own[o], "warmup": list(warmup)} for o in lr}


# Phase II: what each optimizer retunes at every other (size, budget): the LR, and rho for Sophia
_PHASE2 = {"adamw": ("lr",), "lion": ("lr",), "sophia_g": ("lr", "rho"), "sophia_h": ("lr", "rho"), "s3": ("lr",),
           "muon": ("lr",), "soap": ("lr",), "kron": ("lr",)}


PROFILES: dict[str, Profile] = {
    "quick": Profile(  # what the tests run end to end: 3 sizes x 3 budgets, 2 seeds, a few minutes on 2 cores
        name="quick",
        base=("train.batch_size=8", "train.seq_len=32", "train.eval_iters=4", "train.log_interval=100", "train.plot=false"),
        sizes=tuple(Size(f"nano{d}", ("+model=nano", f"model.n_embd={d}", "model.n_head=2"), (100, 200, 400)) for d in (16, 32, 48)),
        seeds=(0, 1),
        spaces={"adamw": {"lr": [1e-2, 2e-2, 4e-2]}, "sophia_g": {"lr": [4e-3, 8e-3, 1.6e-2], "rho": [0.1, 0.2, 0.4]}},
        phase2={"adamw": ("lr",), "sophia_g": ("lr",)},
    ),
    "cpu": Profile(  # byte-level models on the embedded corpus; 4 budgets per size, so AdamW's fit has a residual
        name="cpu",
        base=_BASE_CPU,
        sizes=(Size("tiny2x64", ("+model=tiny", "model.n_layer=2", "model.n_embd=64", "model.n_head=2"), _CPU_STEPS),
               Size("tiny3x96", ("+model=tiny", "model.n_layer=3", "model.n_embd=96", "model.n_head=3"), _CPU_STEPS),
               Size("tiny4x128", ("+model=tiny",), _CPU_STEPS)),
        seeds=(0, 1, 2),
        spaces=_own_spaces({"adamw": 2e-3, "lion": 5e-4, "sophia_g": 6e-4, "sophia_h": 6e-4, "s3": 1e-3, "muon": 1e-3,
                            "soap": 3e-3, "kron": 3e-4}, warmup=[0.025, 0.05, 0.1]),
        phase2=_PHASE2,
    ),
    "gpu_small": Profile(  # OpenWebText, GPT-2 BPE, the paper's batch (480 x 1024): see --estimate for GPU-hours
        name="gpu_small",
        base=("+experiment=paper", "train.eval_iters=50", "train.plot=false"),
        sizes=(Size("gpt2_30m", ("+model=gpt2_30m",), (2500, 5000, 10000)),
               Size("gpt2_small", ("+model=gpt2_small",), (5000, 10000, 20000)),
               Size("gpt2_medium", ("+model=gpt2_medium",), (10000, 20000, 40000))),
        seeds=(0, 1, 2),
        spaces=_own_spaces({"adamw": 6e-4, "lion": 1e-4, "sophia_g": 3e-4, "sophia_h": 3e-4, "s3": 6e-4, "muon": 2e-3,
                            "soap": 3e-3, "kron": 3e-4}, warmup=[0.01, 0.02, 0.04]),
        phase2=_PHASE2,
    ),
}


def overrides_for(optim: str, point: dict[str, float], steps: int) -> list[str]:
    """Config overrides of one hyperparameter point (1 - beta and the warmup fraction turned into settings)."""
    out = [f"optim={optim}", f"train.max_steps={steps}"]
    warmup = point.get("warmup", 0.05)
    out.append(f"train.warmup_steps={max(1, round(warmup * steps))}")
    defaults = None
    for key, value in sorted(point.items()):
        if key == "warmup":
            continue
        if key == "one_minus_beta2":
            defaults = defaults or compose_config(["+model=nano", f"optim={optim}"]).optim
            out.append(f"optim.betas=[{defaults.betas[0]},{1 - value:.6g}]")
        elif key == "one_minus_beta":
            out.append(f"optim.beta={1 - value:.6g}")
        elif key in ("hess_interval", "p"):
            out.append(f"optim.{key}={max(1, round(value))}")
        else:
            out.append(f"optim.{key}={value:.6g}")
    return out


def feasible(point: dict[str, float]) -> bool:
    """Whether a point can be trained: everything positive, the warmup at most the whole run, each beta above 0."""
    betas_ok = all(point[k] < 1 for k in ("one_minus_beta", "one_minus_beta2") if k in point)
    return all(v > 0 for v in point.values()) and point.get("warmup", 0) <= 1 and betas_ok


def run_name(size: Size, optim: str, point: dict[str, float], steps: int, seed: int) -> str:
    """Folder name of one run: size, optimizer, hyperparameters, budget and seed."""
    hp = "-".join(f"{k}{v:.4g}" for k, v in sorted(point.items()))
    return f"{size.name}-{optim}-{hp}-T{steps}-s{seed}"


def read_results(path: Path, repair: bool = False) -> list[dict]:
    """The rows of ``results.jsonl``. A torn last line (a worker killed mid-append) is skipped and reported,
    and with ``repair`` cut off (hold the lock), so the next append starts a line of its own; a corrupt line
    before the last is refused with its number (the file was edited or damaged: no guess is made)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "name" not in row:
                raise ValueError("not a result row")
        except ValueError as e:
            if number == len(lines) or all(not rest.strip() for rest in lines[number:]):
                print(f"{path}: its last line ({len(line)} bytes) is torn, the write of a killed run; skipped"
                      f"{', removed' if repair else ''} (that run will train again).", flush=True)
                if repair:
                    atomic_write_text(path, "".join(f"{x}\n" for x in lines[: number - 1] if x.strip()))
                break
            raise ConfigError(f"{path}, line {number}, is not a result row ({e}): the file was edited or damaged. Fix or "
                              f"delete that line (its run then trains again) and re-run the same command.") from None
        rows.append(row)
    return rows


@contextlib.contextmanager
def _locked(out: Path):
    """An exclusive lock on ``out`` (``out/.lock``) while workers write the shared results files."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class RunResult:
    """What the reports need of a finished run."""

    final_val: float
    seconds: float
    tokens: int


class Runner:
    """Runs (or reuses) training runs and prints the progress: runs done of planned, and the ETA."""

    def __init__(self, out: Path, profile: Profile, extra: list[str], planned: int):
        self.out, self.profile, self.extra = out, profile, extra
        self.results_file = out / "results.jsonl"
        self.results: dict[str, dict] = {}
        with _locked(out):
            rows = read_results(self.results_file, repair=True)
        for row in rows:
            self.results[row["name"]] = row
        self.planned, self.trained, self.train_seconds = planned, 0, 0.0
        self.seen: set[str] = set()  # distinct runs asked for so far (a point tuning revisits counts once)
        self.t0 = time.perf_counter()

    @property
    def done(self) -> int:
        """Distinct runs finished or reused so far."""
        return len(self.seen)

    def replan(self, left: int) -> None:
        """Re-base the progress total at a stage boundary: ``left`` more distinct runs are expected."""
        self.planned = self.done + left

    def run(self, size: Size, optim: str, point: dict[str, float], steps: int, seed: int, phase: str) -> RunResult:
        """The final val loss, seconds and tokens of one run (inf loss when it diverged)."""
        name = run_name(size, optim, point, steps, seed)
        self.seen.add(name)
        self.planned = max(self.planned, self.done)
        if name not in self.results:
            self.results[name] = self._train(name, size, optim, point, steps, seed)
            with _locked(self.out), open(self.results_file, "a") as f:  # other workers append to the same file
                f.write(json.dumps(self.results[name]) + "\n")
            self.trained += 1
            self.train_seconds += self.results[name]["wall"]
            self._progress(name, phase)
        row = self.results[name]
        return RunResult(row["final_val"], row["seconds"], row["tokens"])

    def overrides(self, name: str, size: Size, optim: str, point: dict[str, float], steps: int, seed: int) -> list[str]:
        """The training run ``name`` as config overrides (checkpointed every quarter, so a killed run resumes)."""
        return [*self.profile.base, *size.overrides, *overrides_for(optim, point, steps), f"train.seed={seed}",
                f"train.out_dir={self.out / 'runs' / name}", f"train.eval_interval={steps}",
                f"train.ckpt_interval={max(1, steps // 4)}", *self.extra]

    def _train(self, name: str, size: Size, optim: str, point: dict[str, float], steps: int, seed: int) -> dict:
        from sophia_train.trainer import Trainer

        folder = self.out / "runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        resume = (folder / "ckpt.pt").exists()  # a run a killed benchmark left half-way
        overrides = [*self.overrides(name, size, optim, point, steps, seed), "train.resume=true" if resume else "train.overwrite=true"]
        t0 = time.perf_counter()
        with open(folder / "train.log", "a") as log, contextlib.redirect_stdout(log):
            try:
                trainer = Trainer(compose_config(overrides))
                tokens = trainer.tokens_per_step * steps
                trainer.fit()
                loss = final_val(folder)
            except TrainingDiverged as e:  # a diverged run is a result (an infinite loss), not a crash
                print(f"diverged: {e}")
                loss, tokens = math.inf, 0
        evals = [r for r in read_metrics(folder / "metrics.jsonl") if r["kind"] == "eval" and "elapsed_s" in r]
        seconds = evals[-1]["elapsed_s"] if evals and math.isfinite(loss) else math.nan
        (folder / "ckpt.pt").unlink(missing_ok=True)  # the metrics are the result; checkpoints would fill the disk
        return {"name": name, "size": size.name, "optim": optim, "point": point, "steps": steps, "seed": seed,
                "final_val": loss, "seconds": seconds, "tokens": tokens, "wall": time.perf_counter() - t0}

    def _progress(self, name: str, phase: str) -> None:
        mean = self.train_seconds / max(1, self.trained)
        left = max(0, self.planned - self.done) * mean
        row = self.results[name]
        print(f"[{self.profile.name}] {self.done}/{self.planned} runs | {phase} | {name} | final val {row['final_val']:.4f} | "
              f"{row['wall']:.1f}s | elapsed {format_duration(time.perf_counter() - self.t0)} | ETA ~{format_duration(left)}",
              flush=True)


def phase1_runs(space: dict[str, list[float]]) -> int:
    """Distinct Phase I runs of ``tune`` over ``space`` when no grid is extended: every grid point in the
    first sweep (their shared centre once), then at most two new neighbours per hyperparameter but the last
    in the second (none when the first moved nothing; no second sweep for a single hyperparameter)."""
    n, points = len(space), sum(len(grid) for grid in space.values())
    return points + n - 1


@dataclass
class RunCounts:
    """Distinct runs of one optimizer in each stage of a profile, before any grid extension."""

    phase1: int  # at the anchor
    phase2_per_budget: int  # at every other (size, budget)
    seeds_per_budget: int  # the chosen point's other seeds, at every (size, budget)


def run_counts(profile: Profile, optim: str) -> RunCounts:
    """What ``run_profile`` trains for ``optim`` when no grid is extended (``phase1_runs`` for both phases)."""
    space = profile.spaces[optim]
    retuned = {k: [0.5, 1.0, 2.0] for k in profile.phase2.get(optim, ("lr",)) if k in space}
    return RunCounts(phase1_runs(space), phase1_runs(retuned) if retuned else 0, len(profile.seeds) - 1)


def settle(point: dict[str, float], loss_of, max_moves: int = 20) -> dict[str, float]:
    """Move ``point`` to its best x1/2 or x2 neighbour in any one hyperparameter while that one is better (at
    most ``max_moves`` times), so Phase I ends at a checked local optimum: coordinate descent's last sweep
    leaves the neighbours of hyperparameters searched before its last move untried."""
    for _ in range(max_moves):
        centre = loss_of(point)
        near = [{**point, key: point[key] * factor} for key in point for factor in (0.5, 2.0)]
        losses = [loss_of(p) for p in near]
        best = min(range(len(near)), key=losses.__getitem__)
        if not losses[best] < centre:
            break
        point = near[best]
    return point


def _at_anchor(points: list[dict]) -> list[dict]:
    """The Phase I runs of one optimizer's tuning log: those at its first run's (size, budget)."""
    return [p for p in points if (p["size"], p["steps"]) == (points[0]["size"], points[0]["steps"])]


def neighbour_rows(tried: dict[str, list[dict]], chosen: dict) -> list[str]:
    """table.md's check of each Phase I point against its x1/2 and x2 neighbours (from ``tuning.json``)."""
    lines = ["| optimizer | loss at the Phase I point | neighbours run | best neighbour | local optimum |", "| --- | ---: | ---: | --- | --- |"]
    for optim, points in tried.items():
        if not points or optim not in chosen:
            continue
        best = next(iter(chosen[optim].values()))
        at = _at_anchor(points)
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
    with _locked(out):  # keep what earlier calls and other workers tuned
        for name, new in (("chosen.json", chosen), ("tuning.json", tried)):
            path = out / name
            old = json.loads(path.read_text()) if path.exists() else {}
            atomic_write_text(path, json.dumps({**old, **new}, indent=2) + "\n")
    return {"chosen": chosen, "tried": tried}


@dataclass
class SizeInfo:
    """What the report needs of a model size: parameters and training FLOPs per token."""

    n_params: int
    flops_per_token: float


def size_info(profile: Profile, size: Size) -> SizeInfo:
    """Parameters and FLOPs per token of ``size`` (the model built on the meta device)."""
    import torch

    from sophia_train.data import open_dataset
    from sophia_train.model import GPT, gpt_config

    cfg = compose_config([*profile.base, *size.overrides, "optim=adamw"])
    vocab = open_dataset(cfg.data.dir, cfg.data.name).vocab_size if Path(cfg.data.dir).exists() else 50304
    with torch.device("meta"):
        model = GPT(gpt_config(cfg.model, vocab, cfg.data.name))
    return SizeInfo(model.num_params(), model.flops_per_token())


def estimator_overhead(optim: str, point: dict[str, float]) -> float:
    """Extra FLOPs of the optimizer's curvature estimator as a fraction of a training step's."""
    from sophia_train.curvature import ESTIMATORS

    cfg = compose_config(["+model=nano", *overrides_for(optim, point, 100)]).optim
    est = ESTIMATORS.get(getattr(cfg, "estimator", "none") or "none")
    return est.cost * cfg.hess_fraction / cfg.hess_interval if est is not None else 0.0


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
    import numpy as np

    from sophia_train.speedup import fit_power_law, half_budget_verdict, interpolated_speedup, seed_speedups

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
    from sophia_train.speedup import Interpolated

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


def sensitivity_slice(points: list[dict], keys: list[str], key: str, best: dict) -> tuple[list[dict], str]:
    """The Phase I runs (at the anchor) that vary only ``key``: those with every other hyperparameter at
    ``best``; when fewer than two are (another hyperparameter moved after ``key``'s last line search),
    the latest line search over ``key``, and its other values as text (else "")."""
    anchor = _at_anchor(points)
    rest = [k for k in keys if k != key]
    groups: dict[tuple, dict[float, dict]] = {}  # other values -> key value -> run
    asked: dict[tuple, int] = {}  # other values -> when a run with them was last asked for
    for i, p in enumerate(anchor):
        groups.setdefault(tuple(p.get(k) for k in rest), {})[p[key]] = p
        asked[tuple(p.get(k) for k in rest)] = i
    at_best = groups.get(tuple(best.get(k) for k in rest), {})
    searched = [g for g in groups.items() if len(g[1]) >= 2]
    if len(at_best) >= 2 or not searched:
        return sorted(at_best.values(), key=lambda p: p[key]), ""
    last = max(searched, key=lambda g: asked[g[0]])
    return sorted(last[1].values(), key=lambda p: p[key]), ", ".join(f"{k}={v:.3g}" for k, v in zip(rest, last[0]))


def plots(out: Path, rows: list[dict], fits: dict, infos: dict[str, SizeInfo], tried: dict, chosen: dict) -> list[Path]:
    """loss_vs_budget_<size>.png (fit drawn), speedup_vs_size.png, sensitivity_<optim>.png."""
    import numpy as np
    from matplotlib import ticker

    from sophia_train.plotting import _pyplot, save_figure

    plt, written = _pyplot(), []
    optims = sorted({r["optim"] for r in rows})
    for size, f in fits.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for optim in optims:
            pts = [r for r in rows if r["size"] == size and r["optim"] == optim]
            ax.errorbar([r["tokens"] for r in pts], [r["loss"] for r in pts], yerr=[r["loss_sd"] for r in pts], marker="o",
                        capsize=3, label=optim)
        d = f["data"]
        xs = np.geomspace(min(r["tokens"] for r in rows if r["size"] == size) / 1.5,
                          max(r["tokens"] for r in rows if r["size"] == size) * 2, 100)
        ax.plot(xs, d(xs), "k--", lw=1, label=f"AdamW fit {d.a:.3g}·D^-{d.b:.3f} + {d.c:.3f}")
        ax.set(xscale="log", xlabel="training tokens (budget)", ylabel="final val loss", title=f"{size}: loss at the end of training")
        ax.legend(fontsize=7)
        written.append(save_figure(fig, out / f"loss_vs_budget_{size}.png"))
    sizes = list(fits)
    n_budgets = min(len({r["steps"] for r in rows if r["size"] == size}) for size in sizes)
    fig, axes = plt.subplots(1, n_budgets, figsize=(3.6 * n_budgets, 3.6), squeeze=False, sharey=True)
    marker = {"=": "o", ">": "^", "<": "v"}  # a bound: AdamW's measured budgets do not reach X's loss
    for i, ax in enumerate(axes[0]):
        steps_at = {size: sorted({r["steps"] for r in rows if r["size"] == size})[i] for size in sizes}
        for j, optim in enumerate(optims):
            if optim == "adamw":  # the reference: the line at 1
                continue
            pts = [r for size in sizes for r in rows if r["size"] == size and r["optim"] == optim and r["steps"] == steps_at[size]]
            pts = [r for r in pts if math.isfinite(r["data_interp"]) and r["data_interp"] > 0]
            xs, ys = [infos[r["size"]].n_params for r in pts], [r["data_interp"] for r in pts]
            color = f"C{j % 10}"
            ax.plot(xs, ys, color=color, lw=1, label=optim)
            for x, y, r in zip(xs, ys, pts):
                bound = r.get("data_interp_bound", "=")
                ax.plot([x], [y], marker=marker[bound], color=color, ms=6, mfc=color if bound == "=" else "none")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="parameters", title=f"{'/'.join(str(steps_at[s]) for s in sizes)} steps")
        ax.xaxis.set_major_locator(ticker.FixedLocator([infos[s].n_params for s in sizes]))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v / 1e6:.3g}M"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.yaxis.set_major_locator(ticker.LogLocator(base=2))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
    axes[0][0].set_ylabel("data speedup over AdamW (interpolated)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: the panels are full
    fig.suptitle("speedup against model size, per budget (hollow triangles: only a bound is known)", fontsize=9)
    written.append(save_figure(fig, out / "speedup_vs_size.png"))
    for optim, points in tried.items():
        keys = sorted({k for p in points for k in p if k not in ("size", "steps", "final_val")})
        if not keys or optim not in chosen:
            continue
        best = next(iter(chosen[optim].values()))
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
        for ax, key in zip(axes[0], keys):
            same, others = sensitivity_slice(points, keys, key, best)
            xs = [p[key] for p in same]
            ax.plot(xs, [min(p["final_val"], 1e3) for p in same], marker="o")
            ax.axvline(best[key], color="r", lw=0.8)
            ax.set(xscale="log", xlabel=key, ylabel="final val loss")
            ax.xaxis.set_major_locator(ticker.FixedLocator(sorted({*xs, best[key]})))  # the values tried, readable
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
            if others:  # coordinate descent moved another hyperparameter after this one's last line search
                ax.set_title(f"at {others}", fontsize=7)
        fig.suptitle(f"{optim}: sensitivity around the Phase I point (others fixed)", fontsize=9)
        written.append(save_figure(fig, out / f"sensitivity_{optim}.png"))
    return written


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


def estimate(profile: Profile, peak_flops: float = 989e12, mfu: float = 0.4) -> str:
    """GPU-hours of a profile on one GPU of ``peak_flops``: per optimizer, its Phase I runs at the anchor
    (smallest size, middle budget), ~3 points per Phase II hyperparameter and the extra seeds at every other budget."""
    from sophia_train.config import total_accum

    cost = {}  # (size, steps) -> GPU-hours of one run
    lines = ["| size | params | budgets (steps) | tokens/step | GPU-hours of one run per budget |", "| --- | ---: | --- | ---: | --- |"]
    for size in profile.sizes:
        info = size_info(profile, size)
        cfg = compose_config([*profile.base, *size.overrides, "optim=adamw"])
        tokens_per_step = cfg.train.batch_size * total_accum(cfg.train) * (cfg.train.seq_len or cfg.model.block_size)
        for s in size.steps:
            cost[(size.name, s)] = s * tokens_per_step * info.flops_per_token / (peak_flops * mfu) / 3600
        lines.append(f"| {size.name} | {info.n_params / 1e6:.0f}M | {', '.join(map(str, size.steps))} | {tokens_per_step:,} | "
                     f"{', '.join(f'{cost[(size.name, s)]:,.1f}' for s in size.steps)} |")
    first = profile.sizes[0]
    anchor = (first.name, first.steps[len(first.steps) // 2])
    lines += ["", "| optimizer | Phase I runs | GPU-hours (Phase I + II + seeds) |", "| --- | ---: | ---: |"]
    total = 0.0
    for optim in profile.spaces:
        n = run_counts(profile, optim)
        hours = n.phase1 * cost[anchor] + sum(n.phase2_per_budget * c for key, c in cost.items() if key != anchor)
        hours += n.seeds_per_budget * sum(cost.values())
        total += hours
        lines.append(f"| {optim} | ~{n.phase1} | {hours:,.0f} |")
    lines.append(f"\nAbout {total:,.0f} H100-hours for the {len(profile.optims)} optimizers at {mfu:.0%} MFU "
                 f"(Hessian-estimator work and grid extensions not counted).")
    return "\n".join(lines)


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
                cmd = [sys.executable, "-m", "sophia_train.benchmark", "--profile", profile.name, "--out", str(out),
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
    print(report(profile, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
