"""AdaHessian (Yao et al., 2021): Adam with the squared Hutchinson diagonal as second moment.

    m <- beta1 * m + (1 - beta1) * g                     every step
    v <- beta2 * v + (1 - beta2) * D^2                   every k steps, D = u ⊙ (H u) (Hutchinson)
    theta <- theta * (1 - lr * wd) - lr * m_hat / (sqrt(v_hat)^k_pow + eps)

with Adam's bias corrections (``v_hat`` counts Hessian refreshes) and decoupled weight decay.
The Sophia paper's baseline uses betas (0.92, 0.99) (Sec. 3.1). Convolution spatial averaging of
the original is not needed for a transformer and is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.optim import Optimizer

from sophia_train.config import AdaHessianConfig
from sophia_train.optim._common import check_betas, check_range, evaluate_closure, global_norm, lazy_state
from sophia_train.optim.contract import CurvatureOptimizer


class AdaHessian(CurvatureOptimizer, Optimizer):
    """Second-order Adam: ``update_hessian(estimates)`` feeds D, ``step()`` applies the update."""

    def __init__(
        self,
        params,
        lr: float = AdaHessianConfig.lr,
        betas: tuple[float, float] = AdaHessianConfig.betas,
        eps: float = AdaHessianConfig.eps,
        weight_decay: float = AdaHessianConfig.weight_decay,
        hessian_power: float = AdaHessianConfig.hessian_power,
    ):
        check_range("lr", lr)
        check_betas(betas)
        check_range("hessian_power", hessian_power, 0.0, 1.0, low_open=True)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, hessian_power=hessian_power))

    def _state_for(self, p: torch.Tensor) -> dict:
        return lazy_state(self.state[p], p, ("m", "v"), counters=("step", "hessian_step"))

    @torch.no_grad()
    def update_hessian(self, hessian_estimates: Mapping[torch.Tensor, torch.Tensor]) -> None:
        """Fold ``D ⊙ D`` of the Hutchinson diagonal ``D`` into the second moment ``v``."""
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                d = hessian_estimates.get(p)
                if d is None:
                    continue
                state = self._state_for(p)
                state["hessian_step"] += 1
                state["v"].mul_(beta2).addcmul_(d, d, value=1 - beta2)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One bias-corrected AdaHessian update."""
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            lr, wd, eps, k = group["lr"], group["weight_decay"], group["eps"], group["hessian_power"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state_for(p)
                state["step"] += 1
                m, v = state["m"], state["v"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                bc1 = 1 - beta1 ** float(state["step"])
                nh = float(state["hessian_step"])
                bc2 = 1 - beta2**nh if nh > 0 else 1.0
                denom = (v / bc2).sqrt_().pow_(k).add_(eps)
                p.mul_(1 - lr * wd)
                p.addcdiv_(m, denom, value=-lr / bc1)
        return loss

    @torch.no_grad()
    def hessian_norm(self) -> torch.Tensor:
        """L2 norm of the second moment ``v`` (compare with Sophia's ‖h‖ only loosely: it is squared)."""
        return global_norm([self.state[p]["v"] for g in self.param_groups for p in g["params"] if "v" in self.state[p]])
