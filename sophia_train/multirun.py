"""Hydra multiruns (``python -m sophia_train -m optim=adamw,lion ...``): each job's own folder inside the sweep's
``train.out_dir``, a ``multirun job N/M`` line as each starts, and a summary of every job when the sweep ends
(printed, and written to ``<hydra.sweep.dir>/summary.md``; the jobs' records are in ``jobs.jsonl`` beside it)."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from sophia_train.atomic import atomic_write_text
from sophia_train.checkpoint import CHECKPOINT_NAME
from sophia_train.checkpoint.sharded import SHARDED_NAME
from sophia_train.errors import ConfigError
from sophia_train.metrics import format_duration

JOBS_FILE = "jobs.jsonl"
SUMMARY_FILE = "summary.md"


def _parse(tokens: list[str]) -> list:
    try:
        return OverridesParser.create().parse_overrides(tokens)
    except Exception:  # Hydra already accepted the line; an exotic token only costs a longer folder name
        return []


def _sweep_tokens(argv: list[str], sweeper_params: dict | None) -> list[str]:
    return [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + [a for a in argv if not a.startswith("-")]


def swept_keys(argv: list[str], sweeper_params: dict | None) -> set[str]:
    """Config keys a multirun varies: comma/range/glob overrides on the command line plus an experiment's sweeper params."""
    keys = {k.lstrip("+~") for k in (sweeper_params or {})}
    return keys | {o.key_or_group.lstrip("+~") for o in _parse([a for a in argv if not a.startswith("-")]) if o.is_sweep_override()}


def sweep_size(argv: list[str], sweeper_params: dict | None, n_trials: int | None = None) -> int | None:
    """How many jobs the sweep runs: ``n_trials`` for a search sweeper (optuna), else the product of the
    values each swept key takes (command line and sweeper params, the command line winning); None if unknown."""
    if n_trials:
        return int(n_trials)
    counts: dict[str, int] = {}
    unknown = set()
    for o in _parse(_sweep_tokens(argv, sweeper_params)):  # in order: a later value of a key replaces an earlier one
        key = o.key_or_group.lstrip("+~")
        unknown.discard(key)
        if not o.is_sweep_override():
            counts[key] = 1
        else:
            try:
                counts[key] = len(list(o.sweep_string_iterator()))
            except Exception:  # a glob (needs the config loader) or an interval: only the sweeper knows
                unknown.add(key)
    if unknown:
        return None
    return math.prod(counts.values()) if counts else None


@dataclass(frozen=True)
class MultirunJob:
    """One job of a sweep: its number, its sub-folder name (number and swept values), the swept values, the job count."""

    num: int
    dir_name: str
    swept: list[str]
    total: int | None


def multirun_job() -> MultirunJob | None:
    """This job of the sweep under ``-m``; None outside a multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    params = hc.sweeper.get("params")
    swept = swept_keys(sys.argv[1:], params)
    values = [o.lstrip("+~") for o in hc.overrides.task]
    chosen = [v for v in values if v.split("=", 1)[0] in swept] if swept else [hc.job.override_dirname or ""]
    name = re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", ",".join(chosen))[:100]
    total = sweep_size(sys.argv[1:], params, hc.sweeper.get("n_trials"))
    return MultirunJob(hc.job.num, f"job{hc.job.num}" + (f"-{name}" if name else ""), [c for c in chosen if c], total)


def refuse_nesting(sweep_out_dir: str | os.PathLike) -> None:
    """Refuse a sweep whose ``train.out_dir`` is a run's folder: its jobs' folders would be nested in that run."""
    folder = Path(sweep_out_dir)
    held = [n for n in (CHECKPOINT_NAME, SHARDED_NAME, "metrics.jsonl") if (folder / n).exists()]
    if held:
        raise ConfigError(
            f"train.out_dir={folder} holds a run ({', '.join(held)}); a multirun puts each job's folder inside its "
            f"train.out_dir, which would nest the jobs in that run. Give the sweep a folder of its own, e.g. "
            f"train.out_dir={folder.parent / (folder.name + '_sweep')}; nothing was written."
        )


def job_line(job: MultirunJob, out_dir: str) -> str:
    """``multirun job 2/4: optim=lion -> runs/x/job1-optim=lion``."""
    return f"multirun job {job.num + 1}/{job.total if job.total else '?'}: {' '.join(job.swept) or '(no swept values)'} -> {out_dir}"


def record_job(job: MultirunJob, out_dir: str, summary: dict[str, Any] | None) -> None:
    """Append this job's outcome to the sweep's ``jobs.jsonl`` (read by ``MultirunSummary`` when the sweep ends)."""
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    row = {"job": job.num, "swept": job.swept, "out_dir": out_dir, **{k: v for k, v in (summary or {}).items()
                                                                      if k in ("step", "final_val_loss", "best_val_loss", "wall_s")}}
    with open(sweep_dir / JOBS_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The sweep's jobs as a Markdown table, lowest final val loss marked."""
    finals = [r["final_val_loss"] for r in rows if isinstance(r.get("final_val_loss"), (int, float))]
    best = min(finals) if finals else None
    lines = [f"{len(rows)} job(s) finished", "", "| job | swept values | steps | final val loss | best val loss | time | folder |",
             "| ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in sorted(rows, key=lambda r: r["job"]):
        fv = r.get("final_val_loss")
        mark = " (lowest)" if best is not None and fv == best and len(rows) > 1 else ""
        fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "—"  # noqa: E731
        wall = format_duration(r["wall_s"]) if isinstance(r.get("wall_s"), (int, float)) else "—"
        lines.append(f"| {r['job']} | {' '.join(r['swept'])} | {r.get('step', '—')} | {fmt(fv)}{mark} | "
                     f"{fmt(r.get('best_val_loss'))} | {wall} | {r['out_dir']} |")
    return "\n".join(lines)


class MultirunSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in ``configs/config.yaml``): when a sweep ends, print and write the summary."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        """Read the jobs' records and print the table (rank 0 of each job wrote its row)."""
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sweep_dir / JOBS_FILE
        if not jobs.exists():
            return
        rows = [json.loads(line) for line in jobs.read_text().splitlines() if line.strip()]
        table = summary_table(rows)
        atomic_write_text(sweep_dir / SUMMARY_FILE, table + "\n")
        print(f"\nmultirun done: {table}\n(also in {sweep_dir / SUMMARY_FILE})")
