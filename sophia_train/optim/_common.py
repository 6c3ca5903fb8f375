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
