"""The paper's LR protocol for large models (Sec. 3.1, App. C.1): the largest peak LR that does not blow up.

Candidates are tried from the largest down (the paper's list by default). A run "blows up" when its
loss turns non-finite or its final val loss is no better than ``blowup_ratio`` x its initial loss.
The paper also checks that 1.25 x the chosen LR blows up: that is always a run of its own at exactly
1.25 x the chosen LR. Every trial keeps its folder under ``<train.out_dir>/lr_search/`` (metrics,
config, loss curve; checkpoints removed), and ``report.md`` / ``report.json`` there list them all.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from sophia_train.atomic import atomic_write_text
from sophia_train.compose import compose_config
from sophia_train.errors import TrainingDiverged
from sophia_train.trainer import Trainer

PAPER_LR_LIST = [6e-4, 4e-4, 3e-4, 2e-4, 1.5e-4, 1.2e-4, 1e-4, 8e-5, 6e-5, 4e-5]


@dataclass
class Trial:
    """One candidate LR, what happened to it, and where its run lives."""

    lr: float
    initial: float
    final: float
    blew_up: bool
    folder: str = ""
    role: str = "candidate"  # or "1.25x check"


def try_lr(overrides: list[str], lr: float, out_dir: Path, blowup_ratio: float = 0.98, role: str = "candidate") -> Trial:
    """Train with peak LR ``lr`` in ``out_dir``; blown up if non-finite or final val > blowup_ratio * initial val."""
    cfg = compose_config([*overrides, f"optim.lr={lr}", f"train.out_dir={out_dir}", "train.overwrite=true", "train.plot=false"])
    trainer = Trainer(cfg)
    initial = trainer.evaluate()
    try:
        final = trainer.fit()["final_val_loss"]
        blew_up = not math.isfinite(final) or final > blowup_ratio * initial
    except TrainingDiverged:
        final, blew_up = math.inf, True
    (out_dir / "ckpt.pt").unlink(missing_ok=True)  # the verdict and the curves are the result
    return Trial(lr, initial, final, blew_up, str(out_dir), role)


def search_dir(overrides: list[str]) -> Path:
    """Where a search with these overrides keeps its trials: ``<train.out_dir>/lr_search``."""
    return Path(compose_config(overrides).train.out_dir) / "lr_search"


def search(overrides: list[str], candidates: list[float] | None = None, work_dir: str | None = None) -> dict:
    """Largest stable LR among ``candidates`` (descending) and whether a real run at 1.25x it blows up."""
    root = Path(work_dir) if work_dir else search_dir(overrides)
    cands = sorted(candidates or PAPER_LR_LIST, reverse=True)
    trials: list[Trial] = []
    chosen = None
    for lr in cands:
        trial = try_lr(overrides, lr, root / f"lr{lr:g}")
        trials.append(trial)
        print(f"lr {lr:g}: initial {trial.initial:.4f} final {trial.final:.4f} {'BLOW-UP' if trial.blew_up else 'stable'}", flush=True)
        if not trial.blew_up:
            chosen = lr
            break
    check = None
    if chosen is not None:
        check = try_lr(overrides, 1.25 * chosen, root / f"lr{1.25 * chosen:g}-check", role="1.25x check")
        trials.append(check)
        print(f"lr {check.lr:g} (1.25x check): final {check.final:.4f} {'BLOW-UP' if check.blew_up else 'stable'}", flush=True)
    result = {"chosen": chosen, "trials": trials, "check_1_25x_blows_up": None if check is None else check.blew_up}
    write_report(root, result)
    return result


def write_report(root: Path, result: dict) -> None:
    """``report.md`` (a table of every trial) and ``report.json`` in the search folder."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["| LR | role | initial val | final val | verdict | run folder |", "| --- | --- | --- | --- | --- | --- |"]
    for t in result["trials"]:
        lines.append(f"| {t.lr:g} | {t.role} | {t.initial:.4f} | {t.final:.4f} | {'blew up' if t.blew_up else 'stable'} | {t.folder} |")
    check = result["check_1_25x_blows_up"]
    lines += ["", f"Largest stable LR: {result['chosen']}; 1.25x blows up: {check}" + ("" if check is None else " (a run of its own)")]
    atomic_write_text(root / "report.md", "\n".join(lines) + "\n")
    payload = {**result, "trials": [asdict(t) for t in result["trials"]]}
    atomic_write_text(root / "report.json", json.dumps(payload, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/lr_blowup_search.py``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="+", help="config overrides (as for python -m sophia_train); trials go to <train.out_dir>/lr_search")
    ap.add_argument("--lrs", type=float, nargs="+", help="candidates (default: the paper's list)")
    args = ap.parse_args(argv)
    result = search(args.overrides, args.lrs)
    root = Path(result["trials"][0].folder).parent if result["trials"] else search_dir(args.overrides)
    print((root / "report.md").read_text(), end="")
    print(f"report: {root / 'report.md'}")
