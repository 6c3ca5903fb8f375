"""Lion (Chen et al., 2023, "Symbolic discovery of optimization algorithms", Program 1).

    c <- beta1 * m + (1 - beta1) * g
    theta <- theta * (1 - lr * wd) - lr * sign(c)
    m <- beta2 * m + (1 - beta2) * g

The Sophia paper's baseline uses betas (0.95, 0.98) and wd 0.2 (Sec. 3.1, App. C.1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

from sophia_train.config import LionConfig
from sophia_train.optim._common import check_betas, check_range, evaluate_closure, lazy_state
from sophia_train.optim.flat import FusedFlatMixin
from sophia_train.optim.kernels import kernels


class Lion(FusedFlatMixin, Optimizer):
    """Sign of an interpolated momentum, with decoupled weight decay.

    ``fused`` and ``foreach`` choose the implementation as in ``SophiaG``: Triton on CUDA, foreach
    elsewhere, the per-tensor loop with ``foreach=False``.
    """

    _flat_state = ("m",)

    def __init__(self, params, lr: float = LionConfig.lr, betas: tuple[float, float] = LionConfig.betas,
                 weight_decay: float = LionConfig.weight_decay,
                 *, foreach: bool | None = None, fused: bool | None = None):
        check_range("lr", lr)
        check_betas(betas)
        check_range("weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, foreach=foreach))
        self._setup_fused(fused)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One Lion update of every parameter with a gradient."""
        loss = evaluate_closure(closure)

        def fused(group, param, grad, state, _padding):
            kernels().lion_step_(param, grad, state["m"], lr=group["lr"], wd=group["weight_decay"], beta1=group["betas"][0],
                                 beta2=group["betas"][1])

        self.flat_step(fused, lambda params: [[lazy_state(self.state[p], p, ("m",))["m"] for p in params]])
        return loss

    def _update_foreach(self, group, params, grads, ms) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        torch._foreach_mul_(params, 1 - lr * wd)
        c = torch._foreach_mul(ms, beta1)
        torch._foreach_add_(c, grads, alpha=1 - beta1)
        torch._foreach_sign_(c)
        torch._foreach_add_(params, c, alpha=-lr)
        torch._foreach_mul_(ms, beta2)
        torch._foreach_add_(ms, grads, alpha=1 - beta2)

    def _update_per_tensor(self, group, params, grads, ms) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        for p, g, m in zip(params, grads, ms):
            p.mul_(1 - lr * wd)
            c = m.mul(beta1).add_(g, alpha=1 - beta1)
            p.add_(c.sign_(), alpha=-lr)
            m.mul_(beta2).add_(g, alpha=1 - beta2)
