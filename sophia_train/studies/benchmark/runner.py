"""Runs (or reuses) one benchmark training run and keeps ``results.jsonl``, the shared record of every
finished run (locked, so local workers and cluster jobs may append to it side by side)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from sophia_train.atomic import atomic_write_text
from sophia_train.compose import compose_config
from sophia_train.errors import ConfigError, TrainingDiverged
from sophia_train.metrics import format_duration, read_metrics
from sophia_train.studies.benchmark.profiles import Profile, Size, overrides_for, run_name
from sophia_train.studies.cpu_study import final_val
from sophia_train.trainer import Trainer


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
def locked(out: Path):
    """An exclusive lock on ``out`` (``out/.lock``) while workers write the shared results files."""
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
    not_clipped: float = math.nan  # Sophia: share of coordinates not clipped, over the last logged window
    h_norm: float = math.nan  # Sophia: the curvature estimate's norm at the end


def run_result(row: dict) -> RunResult:
    """A results.jsonl row as a ``RunResult`` (rows from before the diagnostics were recorded have none)."""
    return RunResult(row["final_val"], row["seconds"], row["tokens"], row.get("not_clipped", math.nan), row.get("h_norm", math.nan))


def last_diagnostics(rows: list[dict]) -> dict[str, float]:
    """Sophia's not-clipped fraction and ||h|| at the last train row that has them (empty for other optimizers)."""
    out = {}
    for r in rows:
        if r["kind"] == "train":
            out.update({new: r[old] for old, new in (("not_clipped_frac", "not_clipped"), ("hessian_norm", "h_norm")) if old in r})
    return out


class Runner:
    """Runs (or reuses) training runs and prints the progress: runs done of planned, and the ETA."""

    def __init__(self, out: Path, profile: Profile, extra: list[str], planned: int):
        self.out, self.profile, self.extra = out, profile, extra
        self.results_file = out / "results.jsonl"
        self.results: dict[str, dict] = {}
        with locked(out):
            rows = read_results(self.results_file, repair=True)
        for row in rows:
            self.results[row["name"]] = row
        self.estimate, self.trained, self.train_seconds = planned, 0, 0.0  # this stage's expected total of runs
        self.seen: set[str] = set()  # distinct runs asked for so far (a point tuning revisits counts once)
        self.t0 = time.perf_counter()

    @property
    def done(self) -> int:
        """Distinct runs finished or reused so far."""
        return len(self.seen)

    @property
    def planned(self) -> int:
        """The progress total: the stage's estimate, or the runs done once they pass it."""
        return max(self.estimate, self.done)

    @property
    def grown(self) -> int:
        """Runs past the stage's estimate (a grid extended past its edge, a neighbour move)."""
        return max(0, self.done - self.estimate)

    def replan(self, left: int) -> None:
        """Re-base the progress total at a stage boundary: ``left`` more distinct runs are expected."""
        self.estimate = self.done + left

    def run(self, size: Size, optim: str, point: dict[str, float], steps: int, seed: int, phase: str) -> RunResult:
        """The final val loss, seconds and tokens of one run (inf loss when it diverged)."""
        name = run_name(size, optim, point, steps, seed)
        self.seen.add(name)
        if name not in self.results:
            self.results[name] = self._train(name, size, optim, point, steps, seed)
            with locked(self.out), open(self.results_file, "a") as f:  # other workers append to the same file
                f.write(json.dumps(self.results[name]) + "\n")
            self.trained += 1
            self.train_seconds += self.results[name]["wall"]
            self._progress(name, phase)
        row = self.results[name]
        return run_result(row)

    def overrides(self, name: str, size: Size, optim: str, point: dict[str, float], steps: int, seed: int) -> list[str]:
        """The training run ``name`` as config overrides (checkpointed every quarter, so a killed run resumes)."""
        return [*self.profile.base, *size.overrides, *overrides_for(optim, point, steps), f"train.seed={seed}",
                f"train.out_dir={self.out / 'runs' / name}", f"train.eval_interval={steps}",
                f"train.ckpt_interval={max(1, steps // 4)}", *self.extra]

    def _train(self, name: str, size: Size, optim: str, point: dict[str, float], steps: int, seed: int) -> dict:

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
        rows = read_metrics(folder / "metrics.jsonl")
        evals = [r for r in rows if r["kind"] == "eval" and "elapsed_s" in r]
        seconds = evals[-1]["elapsed_s"] if evals and math.isfinite(loss) else math.nan
        (folder / "ckpt.pt").unlink(missing_ok=True)  # the metrics are the result; checkpoints would fill the disk
        return {"name": name, "size": size.name, "optim": optim, "point": point, "steps": steps, "seed": seed,
                "final_val": loss, "seconds": seconds, "tokens": tokens, "wall": time.perf_counter() - t0,
                **(last_diagnostics(rows) if math.isfinite(loss) else {})}

    def _progress(self, name: str, phase: str) -> None:
        mean = self.train_seconds / max(1, self.trained)
        left = max(0, self.planned - self.done) * mean
        row = self.results[name]
        print(f"[{self.profile.name}] {self.done}/{self.planned} runs | {phase} | {name} | final val {row['final_val']:.4f} | "
              f"{row['wall']:.1f}s | elapsed {format_duration(time.perf_counter() - self.t0)} | ETA ~{format_duration(left)}"
              + (f" | plan +{self.grown} (a grid extended or a neighbour move; re-estimated at the next stage)" if self.grown else ""),
              flush=True)
