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
