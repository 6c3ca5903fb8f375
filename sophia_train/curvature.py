"""Curvature estimators for Sophia's ``update_hessian``: pure functions of (model, batch).

GNB (Gauss-Newton-Bartlett, Sophia paper Alg. 2): sample labels from the model's own predictive
distribution, take the gradient ``g_hat`` of the mean cross-entropy on them; ``B * g_hat ⊙ g_hat`` is
an unbiased estimate of the Gauss-Newton diagonal (Eq. 10). The factor ``B`` is absorbed into
Sophia's ``rho * bs`` (see ``optim/sophia.py``), so the estimate handed to the optimizer is
``g_hat ⊙ g_hat`` where ``g_hat`` is averaged over micro-batches and ranks exactly like a gradient.

The gradient is taken with ``torch.autograd.grad``: ``.grad`` (the real gradient of the step) is
never touched, the global grad-norm clip never sees it, and DDP's reducer is bypassed (the caller
passes the unwrapped module and averages across ranks itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributed import all_reduce_mean_
from .model import upcast

GNB_STREAM = 2  # seed-stream tag, distinct from the data sampler's train/val streams


def gnb_seed(seed: int, step: int, micro_index: int) -> int:
    """Seed of the label sampler for one global micro-batch of one step (layout-independent)."""
    return int(np.random.SeedSequence([seed, GNB_STREAM, step, micro_index]).generate_state(1, np.uint64)[0] >> 1)


def sample_labels(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw ``y_hat ~ softmax(logits)`` independently at every position (Alg. 2, line 4)."""
    probs = F.softmax(upcast(logits.detach()).reshape(-1, logits.size(-1)), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])


def gnb_gradient(
    model: nn.Module,
    x: torch.Tensor,
    params: Sequence[torch.Tensor],
    generator: torch.Generator,
    autocast: contextlib.AbstractContextManager | None = None,
) -> list[torch.Tensor]:
    """``g_hat``: gradient of the mean CE loss on labels sampled from the model (Alg. 2, line 5)."""
    with autocast if autocast is not None else contextlib.nullcontext():
        logits, _ = model(x, full_logits=True)
    y_hat = sample_labels(logits, generator)
    loss = F.cross_entropy(upcast(logits.reshape(-1, logits.size(-1))), y_hat.reshape(-1))
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def gnb_estimate(
    model: nn.Module,
    micro_batches: Sequence[tuple[int, torch.Tensor]],
    params: Sequence[torch.Tensor],
    seed: int,
    step: int,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[torch.Tensor, torch.Tensor]:
    """``{param: g_hat ⊙ g_hat}`` with ``g_hat`` averaged over this rank's micro-batches and all ranks.

    ``micro_batches`` holds ``(global micro-batch index, inputs)``; each index seeds its own label
    sampler, so the estimate does not depend on how micro-batches are spread over processes.
    """
    total: list[torch.Tensor] | None = None
    for index, x in micro_batches:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(gnb_seed(seed, step, index))
        grads = gnb_gradient(model, x, params, gen, autocast)
        if total is None:  # accumulate in at least fp32 (bf16 params), keep fp64 as fp64
            total = [g.to(torch.promote_types(g.dtype, torch.float32)) for g in grads]
        else:
            for t, g in zip(total, grads):
                t.add_(g)
    assert total is not None, "gnb_estimate needs at least one micro-batch"
    for t in total:
        t.div_(len(micro_batches))
    all_reduce_mean_(total)
    return {p: (g * g).to(p.dtype) for p, g in zip(params, total)}
