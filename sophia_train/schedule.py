"""Learning-rate schedule: linear warmup, then cosine decay to a floor (Sophia paper Sec. 3.1)."""

from __future__ import annotations

import math


def lr_at(step: int, peak_lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.05) -> float:
    """LR of optimizer step ``step`` (0-based): warmup to ``peak_lr``, cosine to ``min_lr_ratio * peak_lr``."""
    min_lr = min_lr_ratio * peak_lr
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    span = max(1, max_steps - warmup_steps)
    progress = (step - warmup_steps) / span
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak_lr - min_lr)


def schedule_args(cfg, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """``lr_at``'s keyword arguments from a run config; ``overrides`` maps dotted keys (``optim.lr``,
    ``train.warmup_steps``, ``train.max_steps``, ``train.min_lr_ratio``) to other values."""
    o = overrides or {}
    t = cfg.train
    return {"peak_lr": o.get("optim.lr", cfg.optim.lr), "warmup_steps": o.get("train.warmup_steps", t.warmup_steps),
            "max_steps": o.get("train.max_steps", t.max_steps), "min_lr_ratio": o.get("train.min_lr_ratio", t.min_lr_ratio)}
