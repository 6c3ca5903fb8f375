"""Sophia-G: Second-order Clipped Stochastic Optimization (Liu et al., Algorithm 3).

The update rule is shared by every Sophia variant; what differs is the curvature estimate that
``update_hessian`` folds into ``h`` (GNB, Algorithm 2, for Sophia-G). The clipped step follows the
official implementation's form of Eq. (6)::

    m <- beta1 * m + (1 - beta1) * g                                  (Alg. 3, line 6)
    h <- beta2 * h + (1 - beta2) * h_hat        every k steps         (Eq. 5 / Alg. 3, line 9)
    theta <- theta * (1 - lr * wd)                                    (Alg. 3, line 12)
    theta <- theta - lr * sign(m) * min(|m| / (rho * bs * max(h, 0) + eps), 1)  (Eq. 6, Alg. 3, l. 13)

``bs`` is the number of tokens in one optimizer step. GNB's estimator is ``B * g_hat ⊙ g_hat``
(Alg. 2, line 6); the factor ``B`` is folded into ``rho * bs`` so ``update_hessian`` receives the
plain ``g_hat ⊙ g_hat``. Where ``h <= 0`` the denominator is ``eps``, the ratio saturates at 1 and the
step is sign momentum — the paper's fallback for negative curvature (Sec. 2.2, Eq. 6's max{γh, ε}).
For ``h >= 0`` this is exactly the official ``rho * bs * h + eps``; the official code, unlike the
paper, steps *against* sign(m) where ``h < 0`` (possible with Hutchinson estimates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.optim import Optimizer

from ._common import evaluate_closure


class SophiaG(Optimizer):
    """Sophia with a diagonal-Hessian EMA refreshed by ``update_hessian()``.

    Drop-in for the official repo's ``SophiaG(params, lr, betas, rho, weight_decay)``:
    fill ``.grad`` with the gradient of the loss on sampled labels, call ``update_hessian()``,
    and call ``step(bs=tokens_per_step)`` after each normal backward pass.
    ``clip=False`` drops the min(., 1) — the paper's "GNB without clipping" ablation (Sec. 3.5).
    """

    #: The trainer passes ``bs`` (tokens per optimizer step) to ``step`` when this is true.
    takes_tokens_per_step = True

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.05,
        weight_decay: float = 0.2,
        *,
        eps: float = 1e-15,
        maximize: bool = False,
        clip: bool = True,
    ):
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid betas: {betas} (each must be in [0, 1))")
        if not rho >= 0.0:
            raise ValueError(f"Invalid rho: {rho}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        if not eps > 0.0:
            raise ValueError(f"Invalid eps: {eps}")
        defaults = dict(lr=lr, betas=tuple(betas), rho=rho, weight_decay=weight_decay, eps=eps, maximize=maximize, clip=clip)
        super().__init__(params, defaults)
        self.last_stats: dict[str, torch.Tensor] = {}

    def _state_for(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0)
            state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["h"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _denominator(self, h: torch.Tensor, group: dict, bs: int) -> torch.Tensor:
        """``rho * bs * max(h, 0) + eps`` (official form; sign momentum where h <= 0)."""
        return (h * (group["rho"] * bs)).clamp_(min=0.0).add_(group["eps"])

    def _fold(self, h: torch.Tensor, h_hat: torch.Tensor, group: dict) -> None:
        """EMA of the estimate: ``h <- beta2 h + (1 - beta2) h_hat`` (Eq. 5)."""
        beta2 = group["betas"][1]
        h.mul_(beta2).add_(h_hat.to(h.dtype), alpha=1 - beta2)

    @torch.no_grad()
    def update_hessian(self, hessian_estimates: Mapping[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Fold a diagonal-curvature estimate into the EMA ``h`` (Eq. 5).

        ``hessian_estimates`` maps a parameter to its estimate ``h_hat`` (for GNB, ``g_hat ⊙ g_hat``).
        Without it, ``p.grad ⊙ p.grad`` is used — the official repo's convention, where ``.grad``
        holds the gradient of the loss on labels sampled from the model.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if hessian_estimates is None:
                    if p.grad is None:
                        continue
                    h_hat = p.grad * p.grad
                else:
                    h_hat = hessian_estimates.get(p)
                    if h_hat is None:
                        continue
                self._fold(self._state_for(p)["h"], h_hat, group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None, bs: int = 5120):
        """Apply one clipped, pre-conditioned update; ``bs`` is the tokens per optimizer step."""
        loss = evaluate_closure(closure)
        not_clipped = None
        total = 0
        for group in self.param_groups:
            lr, wd, beta1 = group["lr"], group["weight_decay"], group["betas"][0]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SophiaG does not support sparse gradients")
                grad = -p.grad if group["maximize"] else p.grad
                state = self._state_for(p)
                state["step"] += 1
                m, h = state["m"], state["h"]
                p.mul_(1 - lr * wd)
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                ratio = m.abs() / self._denominator(h, group, bs)
                if group["clip"]:
                    ratio.clamp_(max=1.0)
                p.addcmul_(m.sign(), ratio, value=-lr)
                n = (ratio < 1).sum()
                not_clipped = n if not_clipped is None else not_clipped + n
                total += ratio.numel()
        if not_clipped is not None:
            self.last_stats = {"not_clipped_frac": not_clipped.float() / total}
        return loss

    @torch.no_grad()
    def hessian_norm(self) -> torch.Tensor:
        """L2 norm of the whole Hessian EMA ``h`` (the paper's Fig. 8 diagnostic)."""
        sq = [self.state[p]["h"].float().pow(2).sum() for g in self.param_groups for p in g["params"] if "h" in self.state[p]]
        if not sq:
            return torch.tensor(0.0)
        return torch.stack(sq).sum().sqrt()


class SophiaH(SophiaG):
    """Sophia-H: the paper's Eq. (6) with Hutchinson estimates (Alg. 1 + 3).

    ``theta <- theta - lr * clip(m / max(gamma * h, eps), 1)``; where ``h <= 0`` the denominator is
    ``eps`` and the step is sign momentum. ``rho`` plays the paper's ``gamma`` (no token scaling).
    ``second_moment=True`` keeps an EMA of ``h_hat ** 2`` and divides by ``max(gamma * sqrt(h), eps)``:
    AdaHessian's pre-conditioner with Sophia's clipping (the paper's "AH+clip", Sec. 3.5).
    ``step()`` takes no ``bs``.
    """

    takes_tokens_per_step = False

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.96, 0.99),
        rho: float = 0.01,
        weight_decay: float = 0.2,
        *,
        eps: float = 1e-12,
        maximize: bool = False,
        clip: bool = True,
        second_moment: bool = False,
    ):
        super().__init__(params, lr, betas, rho, weight_decay, eps=eps, maximize=maximize, clip=clip)
        for group in self.param_groups:
            group.setdefault("second_moment", second_moment)

    def _denominator(self, h: torch.Tensor, group: dict, bs: int) -> torch.Tensor:
        h = h.sqrt() if group["second_moment"] else h
        return (h * group["rho"]).clamp_(min=group["eps"])

    def _fold(self, h: torch.Tensor, h_hat: torch.Tensor, group: dict) -> None:
        h_hat = h_hat.to(h.dtype)
        if group["second_moment"]:
            h_hat = h_hat * h_hat
        beta2 = group["betas"][1]
        h.mul_(beta2).add_(h_hat, alpha=1 - beta2)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """Apply one clipped, pre-conditioned update (no token scaling)."""
        return super().step(closure, bs=1)
