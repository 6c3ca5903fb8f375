"""SoftSignSGD, S3 (the S3 paper's Algorithm 1). No public implementation existed; this one is ours.

With one coefficient beta for both moments and power p (default 3):

    m <- beta * m + (1 - beta) * g                    (line 4)
    s <- beta * s + (1 - beta) * |g|^p                (line 5)
    n <- beta * m + (1 - beta) * g                    (line 6, Nesterov numerator, NAG-II form)
    b <- (beta * s + (1 - beta) * |g|^p)^(1/p)        (line 7, Nesterov denominator)
    theta <- theta * (1 - lr * wd) - lr * n / (b + eps)   (line 8, plus decoupled weight decay)

The Nesterov terms are computed from the freshly updated m, s and g, so no extra state is kept
(two buffers, like Adam). Theorem 2: with one shared beta, |n / b| <= 1 per coordinate; ``eps``
(default 1e-8) only enlarges the denominator, so every coordinate of the update stays within lr.
It guards 0/0 where a coordinate has seen only zero gradients. ``nesterov=False`` uses m / s^(1/p).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

from sophia_train.config import S3Config
from sophia_train.optim._common import check_range, evaluate_closure, lazy_state
from sophia_train.optim.flat import FusedFlatMixin
from sophia_train.optim.kernels import kernels


class SoftSignSGD(FusedFlatMixin, Optimizer):
    """S3: sign-like update m / (p-th power mean of |g|), one beta, optional Nesterov form.

    ``fused`` and ``foreach`` choose the implementation as in ``SophiaG``: Triton on CUDA, foreach
    elsewhere, the per-tensor loop with ``foreach=False``.
    """

    _flat_state = ("m", "s")

    def __init__(
        self,
        params,
        lr: float = S3Config.lr,
        beta: float = S3Config.beta,
        p: float = S3Config.p,
        weight_decay: float = S3Config.weight_decay,
        eps: float = S3Config.eps,
        nesterov: bool = S3Config.nesterov,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        for name, value in (("lr", lr), ("weight_decay", weight_decay), ("eps", eps)):
            check_range(name, value)
        check_range("beta", beta, 0.0, 1.0, high_open=True)
        check_range("p", p, 1.0)  # the paper requires p >= 1
        super().__init__(params, dict(lr=lr, beta=beta, p=p, weight_decay=weight_decay, eps=eps, nesterov=nesterov,
                                         foreach=foreach))
        self._setup_fused(fused)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One S3 update of every parameter with a gradient."""
        loss = evaluate_closure(closure)

        def fused(group, param, grad, state, _padding):
            kernels().s3_step_(param, grad, state["m"], state["s"], lr=group["lr"], wd=group["weight_decay"], beta=group["beta"],
                               power=group["p"], eps=group["eps"], nesterov=group["nesterov"])

        def state_lists(params):
            states = [lazy_state(self.state[p], p, ("m", "s")) for p in params]
            return [[st["m"] for st in states], [st["s"] for st in states]]

        self.flat_step(fused, state_lists)
        return loss

    def _update_foreach(self, group, params, grads, ms, ss) -> None:
        lr, beta, pw, wd, eps = group["lr"], group["beta"], group["p"], group["weight_decay"], group["eps"]
        g_abs_p = torch._foreach_abs(grads)
        torch._foreach_pow_(g_abs_p, pw)
        torch._foreach_mul_(ms, beta)
        torch._foreach_add_(ms, grads, alpha=1 - beta)
        torch._foreach_mul_(ss, beta)
        torch._foreach_add_(ss, g_abs_p, alpha=1 - beta)
        if group["nesterov"]:
            num = torch._foreach_mul(ms, beta)
            torch._foreach_add_(num, grads, alpha=1 - beta)
            den = torch._foreach_mul(ss, beta)
            torch._foreach_add_(den, g_abs_p, alpha=1 - beta)
            torch._foreach_pow_(den, 1.0 / pw)
        else:
            num, den = ms, torch._foreach_pow(ss, 1.0 / pw)
        torch._foreach_mul_(params, 1 - lr * wd)
        torch._foreach_add_(den, eps)
        torch._foreach_addcdiv_(params, num, den, value=-lr)

    def _update_per_tensor(self, group, params, grads, ms, ss) -> None:
        lr, beta, pw, wd, eps = group["lr"], group["beta"], group["p"], group["weight_decay"], group["eps"]
        for p, g, m, s in zip(params, grads, ms, ss):
            g_abs_p = g.abs().pow_(pw)
            m.mul_(beta).add_(g, alpha=1 - beta)
            s.mul_(beta).add_(g_abs_p, alpha=1 - beta)
            if group["nesterov"]:
                num = m.mul(beta).add_(g, alpha=1 - beta)
                den = s.mul(beta).add_(g_abs_p, alpha=1 - beta).pow_(1.0 / pw)
            else:
                num, den = m, s.pow(1.0 / pw)
            p.mul_(1 - lr * wd)
            p.addcdiv_(num, den.add_(eps), value=-lr)
