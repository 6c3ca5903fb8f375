"""Curvature estimators for ``update_hessian``: pure functions of (model, batch).

Hutchinson (Sophia paper Alg. 1): ``u ⊙ (H u)`` with Gaussian u, unbiased for diag(H) (Sec. 2.3).

GNB (Gauss-Newton-Bartlett, Sophia paper Alg. 2): sample labels from the model's own predictive
distribution, take the gradient ``g_hat`` of the mean cross-entropy on them; ``N * g_hat ⊙ g_hat`` is
an unbiased estimate of the Gauss-Newton diagonal of the mean loss (Alg. 2 line 6, Eq. 10), where N is
the number of tokens the sampled-label loss averaged over (sampled labels make E[g_hat] = 0, so the
cross terms vanish whatever N is). ``g_hat`` is averaged over micro-batches and ranks exactly like a
gradient.

Sophia-G (official form) multiplies ``h`` by ``rho * bs`` with ``bs`` = tokens per optimizer step, so
it expects ``g_hat ⊙ g_hat`` of a loss over ``bs`` tokens. When GNB runs on a subset of the step (the
trainer's ``hess_fraction``), N < bs: ``gnb_estimate(..., scale=N / bs)`` hands the optimizer
``(N / bs) * g_hat ⊙ g_hat`` so that ``rho * bs * h`` is ``rho * N * g_hat ⊙ g_hat`` as the paper
means, for any fraction. Without the scale the effective rho was rho / hess_fraction.

The gradient is taken with ``torch.autograd.grad``: ``.grad`` (the real gradient of the step) is
never touched, the global grad-norm clip never sees it, and DDP's reducer is bypassed (the caller
passes the unwrapped module and averages across ranks itself).

Under FSDP (parameters are DTensor shards) gradients only reach the shards through FSDP's own
reduce-scatter, which runs on ``.backward()``: GNB then sets the real gradients aside, back-propagates
the sampled-label losses (FSDP averages them over ranks, as the all-reduce would) and puts the real
gradients back, unchanged. Hutchinson's double backward cannot run through FSDP's gather: it runs on
a whole-parameter replica assembled for the estimate (the full parameters on every rank while it
runs, freed after), and each rank keeps its shard of the result. Both give the estimate of the
unsharded model on the same micro-batches (``tests/integration/test_fsdp.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sophia_train.distributed import all_reduce_mean_
from sophia_train.distributed.parallel import is_sharded, like_param
from sophia_train.errors import ConfigError
from sophia_train.model import GPT, upcast

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


def _mean_over_micro_batches(per_micro: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Element-wise mean of per-micro-batch tensor lists (at least fp32), then mean over ranks."""
    assert per_micro, "a curvature estimate needs at least one micro-batch"
    total = [t.to(torch.promote_types(t.dtype, torch.float32)).clone() for t in per_micro[0]]
    for tensors in per_micro[1:]:
        for acc, t in zip(total, tensors):
            acc.add_(t)
    for acc in total:
        acc.div_(len(per_micro))
    all_reduce_mean_(total)
    return total


def gnb_estimate(
    model: nn.Module,
    micro_batches: Sequence[tuple[int, torch.Tensor]],
    params: Sequence[torch.Tensor],
    seed: int,
    step: int,
    autocast: contextlib.AbstractContextManager | None = None,
    scale: float = 1.0,
) -> dict[torch.Tensor, torch.Tensor]:
    """``{param: scale * g_hat ⊙ g_hat}`` with ``g_hat`` averaged over this rank's micro-batches and all ranks.

    ``micro_batches`` holds ``(global micro-batch index, inputs)``; each index seeds its own label
    sampler, so the estimate does not depend on how micro-batches are spread over processes.
    ``scale``: GNB tokens / tokens per optimizer step for Sophia-G's ``rho * bs`` form (module docstring).
    """
    if any(is_sharded(p) for p in params):
        total = _fsdp_gnb_gradient(model, micro_batches, params, seed, step, autocast)
    else:
        per_micro = []
        for index, x in micro_batches:
            gen = torch.Generator(device=x.device)
            gen.manual_seed(gnb_seed(seed, step, index))
            per_micro.append(gnb_gradient(model, x, params, gen, autocast))
        total = _mean_over_micro_batches(per_micro)
    return {p: (g * g * scale).to(p.dtype) for p, g in zip(params, total)}


def _fsdp_gnb_gradient(model, micro_batches, params, seed, step, autocast) -> list[torch.Tensor]:
    """``g_hat`` of an FSDP model, sharded like ``params``: the sampled-label losses back-propagated
    through FSDP (mean over micro-batches here, over ranks by its reduce-scatter) with the real ``.grad``
    set aside meanwhile and restored unchanged."""
    real = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        for index, x in micro_batches:
            gen = torch.Generator(device=x.device)
            gen.manual_seed(gnb_seed(seed, step, index))
            with autocast if autocast is not None else contextlib.nullcontext():
                logits, _ = model(x, full_logits=True)
            y_hat = sample_labels(logits, gen)
            loss = F.cross_entropy(upcast(logits.reshape(-1, logits.size(-1))), y_hat.reshape(-1))
            (loss / len(micro_batches)).backward()
        return [torch.zeros_like(p) if p.grad is None else p.grad.float() for p in params]
    finally:
        for p, g in zip(params, real):
            p.grad = g


HUTCHINSON_STREAM = 3


def hutchinson_seed(seed: int, step: int) -> int:
    """Seed of the probe vector u of one step: the same on every rank and micro-batch."""
    return int(np.random.SeedSequence([seed, HUTCHINSON_STREAM, step]).generate_state(1, np.uint64)[0] >> 1)


def hutchinson_estimate(
    model: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    params: Sequence[torch.Tensor],
    seed: int,
    step: int,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[torch.Tensor, torch.Tensor]:
    """``{param: u ⊙ (H u)}`` with u ~ N(0, I) (Sophia Alg. 1) for the Hessian H of the mean loss.

    One probe u per step, shared by all micro-batches and ranks; H u is averaged over micro-batches
    and ranks (it is linear in the loss), so the estimate is Hutchinson's for the whole subset.
    The Hessian-vector product is a double backward: ``model`` must be the plain module (not DDP,
    not compiled), and attention runs on SDPA's math kernel, the one that supports it.
    """
    if any(is_sharded(p) for p in params):
        replica, whole = _whole_replica(model, params)
        estimate = hutchinson_estimate(replica, micro_batches, whole, seed, step, autocast)
        return {p: like_param(estimate[w], p) for p, w in zip(params, whole)}
    device = params[0].device
    gen = torch.Generator(device=device)
    gen.manual_seed(hutchinson_seed(seed, step))
    u = [torch.randn(p.shape, generator=gen, device=device, dtype=torch.promote_types(p.dtype, torch.float32)) for p in params]
    per_micro = []
    with sdpa_kernel(SDPBackend.MATH):
        for x, y in micro_batches:
            with autocast if autocast is not None else contextlib.nullcontext():
                _, loss = model(x, y)
            grads = torch.autograd.grad(loss, list(params), create_graph=True)
            hv = torch.autograd.grad(grads, list(params), grad_outputs=[v.to(g.dtype) for v, g in zip(u, grads)], allow_unused=True)
            per_micro.append([torch.zeros_like(v) if h is None else h.detach() for v, h in zip(u, hv)])
    total = _mean_over_micro_batches(per_micro)
    return {p: (v * hv).to(p.dtype) for p, v, hv in zip(params, u, total)}


def _whole_replica(model: nn.Module, params: Sequence[torch.Tensor]) -> tuple[nn.Module, list[torch.Tensor]]:
    """A plain copy of an FSDP ``GPT`` holding its whole parameters (gathered from every rank), and the
    copy's parameters in the order of ``params``."""

    with torch.device("meta"):
        replica = GPT(model.config)
    replica.to_empty(device=params[0].device)
    replica.transformer.wte.weight = replica.lm_head.weight  # to_empty does not keep the tie
    by_name = dict(replica.named_parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    whole = [by_name[names[id(p)]] for p in params]
    with torch.no_grad():
        for w, p in zip(whole, params):
            w.copy_(p.full_tensor() if is_sharded(p) else p)  # every rank gathers the same tensors in the same order
    replica.train(model.training)
    return replica, whole


def empirical_fisher_estimate(*_: object, **__: object) -> None:
    """The real gradient squared (E-F+clip, Sec. 3.5): the optimizer reads ``.grad`` itself, so no estimate is passed."""
    return None


@dataclass(frozen=True)
class Estimator:
    """A curvature estimator as the training loop and the compute accounting see it.

    ``estimate(model, micro_batches, params, seed, step, autocast, share)`` gets, for each micro-batch of
    the step, ``(global index, inputs, targets)`` cut to the estimator's share of the sequences, and
    ``share`` = that share (GNB tokens / step tokens); it returns ``{param: h_hat}`` or None (use ``.grad``).
    ``cost``: its extra forward/backward work relative to one training step, per unit of
    ``hess_fraction / hess_interval`` (the paper's Table 1 puts GNB or Hutchinson at ~5-6% with k = 10).
    ``plain_module``: needs the unwrapped, uncompiled module (double backward: not through DDP or compile).
    """

    name: str
    estimate: Callable[..., dict[torch.Tensor, torch.Tensor] | None]
    cost: float
    plain_module: bool


def _gnb(model, micro, params, seed, step, autocast, share):
    return gnb_estimate(model, [(j, x) for j, x, _ in micro], params, seed, step, autocast, share)


def _hutchinson(model, micro, params, seed, step, autocast, share):
    return hutchinson_estimate(model, [(x, y) for _, x, y in micro], params, seed, step, autocast)


ESTIMATORS: dict[str, Estimator] = {
    "gnb": Estimator("gnb", _gnb, cost=1.0, plain_module=False),  # one forward + backward
    "hutchinson": Estimator("hutchinson", _hutchinson, cost=5.0 / 3.0, plain_module=True),  # + a double backward
    "empirical_fisher": Estimator("empirical_fisher", empirical_fisher_estimate, cost=0.0, plain_module=False),
}


def check_estimator(optim_cfg: object) -> None:
    """Refuse an ``optim.estimator`` that is not in ``ESTIMATORS`` (or ``none``); optimizers without one pass."""
    name = getattr(optim_cfg, "estimator", None)
    names = (*ESTIMATORS, "none")
    if name is not None and name not in names:
        raise ConfigError(f"optim.estimator must be one of {', '.join(names)}, got {name!r}.")
