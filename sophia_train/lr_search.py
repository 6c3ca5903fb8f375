"""The paper's LR protocol for large models (Sec. 3.1, App. C.1): the largest peak LR that does not blow up.

Candidates are tried from the largest down (the paper's list by default). A run "blows up" when its
loss turns non-finite or its final val loss is no better than ``blowup_ratio`` x its initial loss.
The paper also checks that 1.25 x the chosen LR blows up; ``search`` reports that check too.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import TrainingDiverged, compose_config
from .trainer import Trainer

PAPER_LR_LIST = [6e-4, 4e-4, 3e-4, 2e-4, 1.5e-4, 1.2e-4, 1e-4, 8e-5, 6e-5, 4e-5]


@dataclass
class Trial:
    """One candidate LR and what happened to it."""

    lr: float
    initial: float
    final: float
    blew_up: bool


def try_lr(overrides: list[str], lr: float, out_dir: Path, blowup_ratio: float = 0.98) -> Trial:
    """Train with peak LR ``lr``; blown up if non-finite or final val > blowup_ratio * initial val."""
    cfg = compose_config([*overrides, f"optim.lr={lr}", f"train.out_dir={out_dir}", "train.overwrite=true", "train.plot=false"])
    trainer = Trainer(cfg)
    initial = trainer.evaluate()
    try:
        final = trainer.fit()["final_val_loss"]
    except TrainingDiverged:
        return Trial(lr, initial, math.inf, True)
    return Trial(lr, initial, final, not math.isfinite(final) or final > blowup_ratio * initial)


def search(overrides: list[str], candidates: list[float] | None = None, work_dir: str | None = None) -> dict:
    """Largest stable LR among ``candidates`` (descending) and whether 1.25x it blows up."""
    cands = sorted(candidates or PAPER_LR_LIST, reverse=True)
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        chosen = None
        for i, lr in enumerate(cands):
            trial = try_lr(overrides, lr, Path(tmp) / f"lr{i}")
            trials.append(trial)
            print(f"lr {lr:g}: initial {trial.initial:.4f} final {trial.final:.4f} {'BLOW-UP' if trial.blew_up else 'stable'}", flush=True)
            if not trial.blew_up:
                chosen = lr
                break
        check = None
        if chosen is not None:
            above = next((t for t in trials if t.lr >= 1.25 * chosen), None)
            check = above if above is not None else try_lr(overrides, 1.25 * chosen, Path(tmp) / "check")
            if above is None:
                trials.append(check)
    return {"chosen": chosen, "trials": trials, "check_1_25x_blows_up": None if check is None else check.blew_up}
