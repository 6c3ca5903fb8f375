"""Small pieces every optimizer of this package shares."""

from __future__ import annotations

from collections.abc import Callable

import torch


def evaluate_closure(closure: Callable[[], float] | None):
    """Re-evaluate the loss with gradients enabled, as ``torch.optim`` optimizers do; None without a closure."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def lazy_state(state: dict, p: torch.Tensor, buffers: tuple[str, ...], counters: tuple[str, ...] = ()) -> dict:
    """Fill an empty per-parameter ``state`` with zero ``buffers`` shaped like ``p`` and 0-d ``counters``."""
    if not state:
        for name in counters:
            state[name] = torch.tensor(0.0)
        for name in buffers:
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return state
