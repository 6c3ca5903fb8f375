"""Sophia-G: Second-order Clipped Stochastic Optimization (Liu et al., Algorithm 3).

The update rule is shared by every Sophia variant; what differs is the curvature estimate that
``update_hessian`` folds into ``h`` (GNB, Algorithm 2, for Sophia-G). The clipped step follows the
official implementation's form of Eq. (6)::

    m <- beta1 * m + (1 - beta1) * g                                  (Alg. 3, line 6)
    h <- beta2 * h + (1 - beta2) * h_hat        every k steps         (Eq. 5 / Alg. 3, line 9)
    theta <- theta * (1 - lr * wd)                                    (Alg. 3, line 12)
    theta <- theta - lr * sign(m) * min(|m| / (rho * bs * max(h, 0) + eps), 1)  (Eq. 6, Alg. 3, l. 13)

``bs`` is the number of tokens in one optimizer step. GNB's estimator is ``N * g_hat ⊙ g_hat``
(Alg. 2, line 6) with N the tokens the sampled-label loss averaged over; as in the official code, the
factor is folded into ``rho * bs``, so ``update_hessian`` receives ``g_hat ⊙ g_hat`` when GNB ran on the
whole step (N = bs) and ``(N / bs) * g_hat ⊙ g_hat`` when it ran on a subset (the trainer's
``hess_fraction``; ``curvature.gnb_estimate(scale=...)``). Where ``h <= 0`` the denominator is ``eps``, the ratio saturates at 1 and the
step is sign momentum — the paper's fallback for negative curvature (Sec. 2.2, Eq. 6's max{γh, ε}).
For ``h >= 0`` this is exactly the official ``rho * bs * h + eps``; the official code, unlike the
paper, steps *against* sign(m) where ``h < 0`` (possible with Hutchinson estimates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.optim import Optimizer

from sophia_train.config import SophiaConfig, SophiaHConfig
from sophia_train.distributed.parallel import shard_group, sharded_sum
from sophia_train.optim._common import check_betas, check_range, evaluate_closure, global_norm, lazy_state
from sophia_train.optim.contract import CurvatureOptimizer
from sophia_train.optim.flat import FusedFlatMixin
from sophia_train.optim.kernels import kernels


class SophiaG(FusedFlatMixin, CurvatureOptimizer, Optimizer):
    """Sophia with a diagonal-Hessian EMA refreshed by ``update_hessian()``.

    Drop-in for the official repo's ``SophiaG(params, lr, betas, rho, weight_decay)``:
    fill ``.grad`` with the gradient of the loss on sampled labels, call ``update_hessian()``,
    and call ``step(bs=tokens_per_step)`` after each normal backward pass.
    ``clip=False`` drops the min(., 1) — the paper's "GNB without clipping" ablation (Sec. 3.5).

    Three implementations of the same math: ``fused=True`` runs one Triton kernel per param group over
    flat buffers (see ``optim/flat.py``: parameters and gradients are moved into them); ``foreach``
    uses ``torch._foreach_*`` over the tensor lists; ``foreach=False`` is the per-tensor loop of the
    official code. ``fused=None`` picks Triton when every parameter is on CUDA and triton is
    installed, and the foreach path elsewhere (``foreach=None`` means foreach; on CPU its lists are
    cut into pieces of ``optim._common.CPU_FOREACH_CHUNK`` elements).
    """

    takes_tokens_per_step = True  # step(bs=tokens per optimizer step): the rho * bs * h denominator
    _flat_state = ("m", "h")

    def __init__(
        self,
        params,
        lr: float = SophiaConfig.lr,
        betas: tuple[float, float] = SophiaConfig.betas,
        rho: float = SophiaConfig.rho,
        weight_decay: float = SophiaConfig.weight_decay,
        *,
        eps: float = SophiaConfig.eps,
        maximize: bool = False,
        clip: bool = True,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        for name, value in (("lr", lr), ("rho", rho), ("weight_decay", weight_decay)):
            check_range(name, value)
        check_range("eps", eps, low_open=True)
        check_betas(betas)
        defaults = dict(lr=lr, betas=tuple(betas), rho=rho, weight_decay=weight_decay, eps=eps, maximize=maximize,
                        clip=clip, foreach=foreach)
        super().__init__(params, defaults)
        self.last_stats: dict[str, torch.Tensor] = {}
        self._shard_group = shard_group(p for g in self.param_groups for p in g["params"])  # FSDP: sum stats over it
        self._setup_fused(fused, maximize=maximize)

    def _state_for(self, p: torch.Tensor) -> dict:
        return lazy_state(self.state[p], p, ("m", "h"), counters=("step",))

    def _denominators(self, hs: list[torch.Tensor], group: dict, bs: int) -> list[torch.Tensor]:
        """``rho * bs * max(h, 0) + eps`` per tensor (official form; sign momentum where h <= 0)."""
        d = torch._foreach_mul(hs, group["rho"] * bs)
        torch._foreach_clamp_min_(d, 0.0)
        torch._foreach_add_(d, group["eps"])
        return d

    def _kernel_denominator(self, group: dict) -> str:
        """Which denominator the fused kernel computes for this group (see ``kernels/sophia_train_kernels/sophia.py``)."""
        return "official"

    def _squares_estimate(self, group: dict) -> bool:
        """Whether ``update_hessian`` folds the square of a given estimate (AH+clip's second moment)."""
        return False

    def _fold(self, h: torch.Tensor, h_hat: torch.Tensor, group: dict) -> None:
        """EMA of the estimate: ``h <- beta2 h + (1 - beta2) h_hat`` (Eq. 5; ``h_hat ** 2`` when squared)."""
        h_hat = h_hat.to(h.dtype)
        if self._squares_estimate(group):
            h_hat = h_hat * h_hat
        beta2 = group["betas"][1]
        h.mul_(beta2).add_(h_hat, alpha=1 - beta2)

    # -- curvature -------------------------------------------------------------------------------
    @torch.no_grad()
    def update_hessian(self, hessian_estimates: Mapping[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Fold a diagonal-curvature estimate into the EMA ``h`` (Eq. 5).

        ``hessian_estimates`` maps a parameter to its estimate ``h_hat`` (for GNB, ``g_hat ⊙ g_hat``).
        Without it, ``p.grad ⊙ p.grad`` is used — the official repo's convention, where ``.grad``
        holds the gradient of the loss on labels sampled from the model.
        """
        if self._flat:
            hessian_ema_ = kernels().hessian_ema_

            for group, fg in self.flat_groups():
                if hessian_estimates is None:  # h_hat = g ⊙ g, squared by the kernel (once more for a second moment)
                    x = fg.grad_buf * fg.grad_buf if self._squares_estimate(group) else fg.grad_buf
                    square, present = True, fg.has_grad
                else:
                    x, square = fg.gather(hessian_estimates), self._squares_estimate(group)
                    present = [p in hessian_estimates for p in fg.params]
                for sl, _ in fg.stretches(present):  # parameters without an estimate keep their h
                    hessian_ema_(fg.state["h"][sl], x[sl], beta2=group["betas"][1], square=square)
            return
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

    # -- the update ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None, bs: int = 5120):
        """Apply one clipped, pre-conditioned update; ``bs`` is the tokens per optimizer step."""
        loss = evaluate_closure(closure)
        total = 0

        def fused(group, param, grad, state, padding):
            nonlocal total
            count = torch.zeros(1, dtype=torch.int64, device=param.device)
            kernels().sophia_step_(param, grad, state["m"], state["h"], count, lr=group["lr"], wd=group["weight_decay"],
                                   beta1=group["betas"][0], scale=group["rho"] * bs, eps=group["eps"], clip=group["clip"],
                                   denominator=self._kernel_denominator(group))
            total += param.numel() - padding
            return count - padding  # padding: m = 0, so ratio 0 and always counted

        def state_lists(params):
            nonlocal total
            states = [self._state_for(p) for p in params]
            torch._foreach_add_([st["step"] for st in states], 1.0)
            total += sum(p.numel() for p in params)
            return [[st["m"] for st in states], [st["h"] for st in states]]

        counts = self.flat_step(fused, state_lists, bs=bs)
        if counts:  # under FSDP the counts are per shard: sum them over the ranks (total is global already)
            count = sharded_sum(torch.stack([c.reshape(()).float() for c in counts]).sum(), self._shard_group)
            self.last_stats = {"not_clipped_frac": count / total}
        return loss

    # sign(m) * min(|m| / d, 1) == clamp(m / d, -1, 1) exactly for d > 0 (d >= eps): the clamped
    # quotient u saves the abs, sign and multiply passes; |u| < 1 marks the coordinates not clipped.
    def _update_foreach(self, group, params, grads, ms, hs, bs) -> torch.Tensor:
        lr, beta1 = group["lr"], group["betas"][0]
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_mul_(ms, beta1)
        torch._foreach_add_(ms, grads, alpha=1 - beta1)
        u = torch._foreach_div(ms, self._denominators(hs, group, bs))
        if group["clip"]:
            torch._foreach_clamp_min_(u, -1.0)
            torch._foreach_clamp_max_(u, 1.0)
        torch._foreach_add_(params, u, alpha=-lr)
        return torch.stack([(x.abs() < 1).sum() for x in u]).sum()

    def _update_per_tensor(self, group, params, grads, ms, hs, bs) -> torch.Tensor:
        lr, beta1 = group["lr"], group["betas"][0]
        count = torch.zeros((), dtype=torch.int64, device=params[0].device)
        for p, g, m, h in zip(params, grads, ms, hs):
            p.mul_(1 - lr * group["weight_decay"])
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            u = m / self._denominators([h], group, bs)[0]
            if group["clip"]:
                u.clamp_(-1.0, 1.0)
            p.add_(u, alpha=-lr)
            count += (u.abs() < 1).sum()
        return count

    @torch.no_grad()
    def hessian_norm(self) -> torch.Tensor:
        """L2 norm of the whole Hessian EMA ``h`` (the paper's Fig. 8 diagnostic)."""
        return global_norm([self.state[p]["h"] for g in self.param_groups for p in g["params"] if "h" in self.state[p]])


class SophiaH(SophiaG):
    """Sophia-H: the paper's Eq. (6) with Hutchinson estimates (Alg. 1 + 3).

    ``theta <- theta - lr * clip(m / max(gamma * h, eps), 1)``; where ``h <= 0`` the denominator is
    ``eps`` and the step is sign momentum. ``rho`` plays the paper's ``gamma`` (no token scaling).
    ``denominator="max_sqrt"`` keeps an EMA of ``h_hat ** 2`` and divides by ``max(gamma * sqrt(h), eps)``:
    AdaHessian's pre-conditioner with Sophia's clipping (the paper's "AH+clip", Sec. 3.5).
    ``step()`` takes no ``bs``. ``fused`` as in ``SophiaG`` (the same kernels, with this denominator).
    """

    takes_tokens_per_step = False

    def __init__(
        self,
        params,
        lr: float = SophiaHConfig.lr,
        betas: tuple[float, float] = SophiaHConfig.betas,
        rho: float = SophiaHConfig.rho,
        weight_decay: float = SophiaHConfig.weight_decay,
        *,
        eps: float = SophiaHConfig.eps,
        maximize: bool = False,
        clip: bool = True,
        denominator: str = SophiaHConfig.denominator,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        super().__init__(params, lr, betas, rho, weight_decay, eps=eps, maximize=maximize, clip=clip, foreach=foreach, fused=fused)
        for group in self.param_groups:
            group.setdefault("denominator", denominator)
        bad = {g["denominator"] for g in self.param_groups} - {"max", "max_sqrt"}
        if bad:
            raise ValueError(f"SophiaH denominator must be max or max_sqrt (official is SophiaG), got {sorted(bad)}")

    def __setstate__(self, state: dict) -> None:
        """Load groups saved before ``denominator`` replaced the ``second_moment`` flag."""
        for group in state.get("param_groups", []):
            if "second_moment" in group:
                group.setdefault("denominator", "max_sqrt" if group.pop("second_moment") else "max")
        super().__setstate__(state)

    def _kernel_denominator(self, group: dict) -> str:
        return group["denominator"]

    def _squares_estimate(self, group: dict) -> bool:
        return group["denominator"] == "max_sqrt"

    def _denominators(self, hs: list[torch.Tensor], group: dict, bs: int) -> list[torch.Tensor]:
        """``max(gamma * h, eps)`` per tensor (``sqrt(h)`` for the AH+clip second moment)."""
        base = torch._foreach_sqrt(hs) if group["denominator"] == "max_sqrt" else hs
        d = torch._foreach_mul(base, group["rho"])
        torch._foreach_clamp_min_(d, group["eps"])
        return d

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """Apply one clipped, pre-conditioned update (no token scaling)."""
        return super().step(closure, bs=1)
