"""Float64 NumPy references written from the papers' equations, and the one loop that drives an optimizer.

Every optimizer test holds an implementation (per-tensor, foreach, fused) to one of these. Arguments:
``params0`` a list of arrays; ``grads[t]`` and ``hess[t]`` per-step lists of arrays of the same
shapes; ``lrs[t]`` the LR of step t; ``wd[i]`` the decoupled weight decay of parameter i.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def _zeros(params0):
    return [np.zeros_like(p) for p in params0]


def sophia(params0, grads, hess, lrs, wd, *, betas, rho, eps, k, bs=1, denominator="official", clip=True, store=lambda x: x):
    """Sophia (Alg. 3 with Eq. 5-6) -> (theta, m, h). Every k steps h <- b2 h + (1 - b2) h_hat (h_hat^2 for
    ``max_sqrt``); theta <- theta (1 - lr wd); m <- b1 m + (1 - b1) g; theta <- theta - lr clip(m / d, 1), with
    d = rho bs max(h, 0) + eps (``official``, Sophia-G), max(rho h, eps) (``max``, Sophia-H: rho is gamma) or
    max(rho sqrt(h), eps) (``max_sqrt``, AH+clip). Where h <= 0 the ratio saturates: sign momentum.
    ``store`` rounds the parameters after each step as their storage dtype would."""
    b1, b2 = betas
    theta, m, h = [p.copy() for p in params0], _zeros(params0), _zeros(params0)
    for t in range(len(lrs)):
        for i in range(len(theta)):
            if t % k == 0:
                h[i] = b2 * h[i] + (1 - b2) * (hess[t][i] ** 2 if denominator == "max_sqrt" else hess[t][i])
            theta[i] = theta[i] * (1 - lrs[t] * wd[i])
            m[i] = b1 * m[i] + (1 - b1) * grads[t][i]
            if denominator == "official":
                d = rho * bs * np.maximum(h[i], 0.0) + eps
            else:
                d = np.maximum(rho * (np.sqrt(h[i]) if denominator == "max_sqrt" else h[i]), eps)
            u = m[i] / d
            theta[i] = store(theta[i] - lrs[t] * (np.clip(u, -1, 1) if clip else u))
    return theta, m, h


def lion(params0, grads, lrs, wd, *, betas):
    """Lion (Chen et al. 2023): theta <- theta (1 - lr wd) - lr sign(b1 m + (1 - b1) g); m <- b2 m + (1 - b2) g."""
    b1, b2 = betas
    theta, m = [p.copy() for p in params0], _zeros(params0)
    for t in range(len(lrs)):
        for i in range(len(theta)):
            c = b1 * m[i] + (1 - b1) * grads[t][i]
            theta[i] = theta[i] * (1 - lrs[t] * wd[i]) - lrs[t] * np.sign(c)
            m[i] = b2 * m[i] + (1 - b2) * grads[t][i]
    return theta, m


def s3(params0, grads, lrs, wd, *, beta, p, eps, nesterov):
    """SoftSignSGD (S3 paper Alg. 1, one beta for both moments), decoupled weight decay."""
    theta, m, s = [x.copy() for x in params0], _zeros(params0), _zeros(params0)
    for t in range(len(lrs)):
        for i in range(len(theta)):
            g = grads[t][i]
            m[i] = beta * m[i] + (1 - beta) * g  # Alg. 1 line 4
            s[i] = beta * s[i] + (1 - beta) * np.abs(g) ** p  # line 5
            if nesterov:
                n = beta * m[i] + (1 - beta) * g  # line 6
                b = (beta * s[i] + (1 - beta) * np.abs(g) ** p) ** (1 / p)  # line 7
            else:
                n, b = m[i], s[i] ** (1 / p)
            theta[i] = theta[i] * (1 - lrs[t] * wd[i]) - lrs[t] * n / (b + eps)  # line 8 + decoupled wd
    return theta, m, s


def adahessian(params0, grads, hess, lrs, wd, *, betas, eps, power, k):
    """AdaHessian (Yao et al. 2021): bias-corrected m and v = EMA of D^2 (refreshed every k steps),
    theta <- theta (1 - lr wd) - lr m_hat / (sqrt(v_hat)^power + eps)."""
    b1, b2 = betas
    theta, m, v = [p.copy() for p in params0], _zeros(params0), _zeros(params0)
    refreshes = 0
    for t in range(len(lrs)):
        if t % k == 0:
            refreshes += 1
            for i in range(len(theta)):
                v[i] = b2 * v[i] + (1 - b2) * hess[t][i] ** 2
        for i in range(len(theta)):
            m[i] = b1 * m[i] + (1 - b1) * grads[t][i]
            m_hat = m[i] / (1 - b1 ** (t + 1))
            v_hat = v[i] / (1 - b2**refreshes)
            theta[i] = theta[i] * (1 - lrs[t] * wd[i]) - lrs[t] * m_hat / (np.sqrt(v_hat) ** power + eps)
    return theta, m, v


def normalized_momentum(params0, grads, lrs, wd, *, beta, eps):
    """The Sophia paper's "Normalize" ablation: momentum divided by its per-tensor RMS."""
    theta, m = [p.copy() for p in params0], _zeros(params0)
    for t in range(len(lrs)):
        for i in range(len(theta)):
            m[i] = beta * m[i] + (1 - beta) * grads[t][i]
            rms = np.sqrt(np.mean(m[i] ** 2))
            theta[i] = theta[i] * (1 - lrs[t] * wd[i]) - lrs[t] * m[i] / (rms + eps)
    return theta, m


def _set_grads(params: Sequence[torch.Tensor], values: Sequence[np.ndarray]) -> None:
    """Write gradients in place where ``.grad`` exists (the fused path keeps it in its flat buffer), else assign."""
    for p, v in zip(params, values):
        g = torch.tensor(v, dtype=p.dtype, device=p.device)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.copy_(g)


def drive(make_opt: Callable, params0, grads, lrs, *, decayed: int, weight_decay: float, dtype=torch.float64, device="cpu",
          hess=None, k: int = 1, hess_as_grads=None, step_kwargs: dict | None = None):
    """Run an optimizer over ``len(lrs)`` steps -> (params, optimizer, not-clipped fraction per step).

    The first ``decayed`` parameters form a group with ``weight_decay``, the rest one without. Every k
    steps the curvature estimate is folded in: ``hess[t]`` as a ``{param: h_hat}`` dict, or, with
    ``hess_as_grads``, written into ``.grad`` for ``update_hessian()`` (the official repo's convention).
    """
    params = [torch.tensor(p, dtype=dtype, device=device, requires_grad=True) for p in params0]
    opt = make_opt([{"params": params[:decayed], "weight_decay": weight_decay}, {"params": params[decayed:], "weight_decay": 0.0}])
    fractions = []
    for t in range(len(lrs)):
        for group in opt.param_groups:
            group["lr"] = lrs[t]
        if t % k == 0 and (hess is not None or hess_as_grads is not None):
            if hess_as_grads is not None:
                _set_grads(params, hess_as_grads[t])
                opt.update_hessian()
            else:
                opt.update_hessian({p: torch.tensor(h, dtype=dtype, device=device) for p, h in zip(params, hess[t])})
            opt.zero_grad()
        _set_grads(params, grads[t])
        opt.step(**(step_kwargs or {}))
        if "not_clipped_frac" in getattr(opt, "last_stats", {}):
            fractions.append(opt.last_stats["not_clipped_frac"])
    return params, opt, fractions
