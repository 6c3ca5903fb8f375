"""Normalized momentum: the Sophia paper's "Normalize" ablation (Sec. 3.5, Fig. 7c).

Update normalization without a pre-conditioner. The paper gives no formula; ours normalizes each
tensor's momentum to unit RMS so that the step has the same scale as sign momentum (the "Clip"
ablation): ``theta <- theta * (1 - lr * wd) - lr * m / (||m||_2 / sqrt(d) + eps)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

from sophia_train.config import NormalizeConfig
from sophia_train.optim._common import check_range, evaluate_closure, lazy_state


class NormalizedMomentum(Optimizer):
    """EMA momentum, each tensor's update rescaled to RMS 1 (times lr)."""

    def __init__(self, params, lr: float = NormalizeConfig.lr, beta: float = NormalizeConfig.beta,
                 weight_decay: float = NormalizeConfig.weight_decay, eps: float = NormalizeConfig.eps):
        check_range("lr", lr)
        check_range("weight_decay", weight_decay)
        check_range("beta", beta, 0.0, 1.0, high_open=True)
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay, eps=eps))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One normalized-momentum update."""
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            lr, beta, wd, eps = group["lr"], group["beta"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = lazy_state(self.state[p], p, ("m",))["m"]
                m.mul_(beta).add_(p.grad, alpha=1 - beta)
                rms = m.norm() / (m.numel() ** 0.5)
                p.mul_(1 - lr * wd)
                p.add_(m / (rms + eps), alpha=-lr)
        return loss
