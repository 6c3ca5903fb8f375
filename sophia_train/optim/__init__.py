"""Optimizers by name. Each entry builds a ``torch.optim.Optimizer`` from its config dataclass.

Parameter grouping (one rule for every optimizer): tensors with 2 or more dimensions (matmul weights,
embeddings) get weight decay; 1-D tensors (LayerNorm gains, biases) do not — nanoGPT's rule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..config import AdamWConfig, ConfigError, OptimConfig, SophiaGConfig
from .sophia import SophiaG

__all__ = ["SophiaG", "build_optimizer", "param_groups", "OPTIMIZERS", "uses_hessian"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group (dim >= 2) and an undecayed one (dim < 2)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _adamw(model: nn.Module, cfg: AdamWConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        fused=fused or None,
        foreach=None if fused else True,
    )


def _sophia_g(model: nn.Module, cfg: SophiaGConfig, device: torch.device) -> torch.optim.Optimizer:
    return SophiaG(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), rho=cfg.rho, eps=cfg.eps)


OPTIMIZERS: dict[str, Callable[[nn.Module, OptimConfig, torch.device], torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "sophia_g": _sophia_g,
}


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer named ``cfg.name`` over ``model``'s parameters."""
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.name!r}; available: {', '.join(sorted(OPTIMIZERS))}.")
    return OPTIMIZERS[cfg.name](model, cfg, device)


def uses_hessian(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer wants curvature estimates through ``update_hessian``."""
    return callable(getattr(optimizer, "update_hessian", None))
