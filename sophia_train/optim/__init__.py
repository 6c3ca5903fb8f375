"""Optimizers by config type. Each builder makes a ``torch.optim.Optimizer`` from its dataclass.

Parameter grouping (one rule for every optimizer): tensors with 2 or more dimensions (matmul weights,
embeddings) get weight decay; 1-D tensors (LayerNorm gains, biases) do not — nanoGPT's rule. For the
torch.optim classes, ``weight_decay`` means what torch means by it (L2 for SGD/Adam, decoupled for
AdamW); the classes here all decay decoupled, theta <- theta * (1 - lr * wd).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from sophia_train.config import (
    AdaHessianConfig,
    AdamWConfig,
    KronConfig,
    LionConfig,
    MuonConfig,
    NormalizeConfig,
    OptimConfig,
    S3Config,
    SOAPConfig,
    SophiaConfig,
    SophiaHConfig,
    TorchOptimConfig,
)
from sophia_train.distributed.parallel import is_sharded
from sophia_train.errors import ConfigError
from sophia_train.optim.adahessian import AdaHessian
from sophia_train.optim.contract import CurvatureOptimizer, curvature_norm, optimizer_step, step_stats, update_curvature
from sophia_train.optim.flat import FusedFlatMixin
from sophia_train.optim.lion import Lion
from sophia_train.optim.muon import MuonAdamW, split_for_muon
from sophia_train.optim.normalize import NormalizedMomentum
from sophia_train.optim.peers import build_kron, build_soap
from sophia_train.optim.s3 import SoftSignSGD
from sophia_train.optim.sophia import SophiaG, SophiaH
from sophia_train.optim.whole import WholeTensorSteps, whole_tensor_class

__all__ = [
    "AdaHessian", "Lion", "MuonAdamW", "NormalizedMomentum", "SoftSignSGD", "SophiaG", "SophiaH",
    "build_optimizer", "param_groups", "hessian_estimator", "implementation",
    "CurvatureOptimizer", "curvature_norm", "optimizer_step", "step_stats", "update_curvature",
]


def param_groups(params: nn.Module | Iterable[torch.Tensor], weight_decay: float) -> list[dict]:
    """Split trainable parameters (of a module, or given) into a decayed group (dim >= 2) and an undecayed one (dim < 2)."""
    params = [p for p in (params.parameters() if isinstance(params, nn.Module) else params) if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _adamw(model: nn.Module, cfg: AdamWConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
        fused=fused or None, foreach=None if fused else True,
    )


def _sophia(model: nn.Module, cfg: SophiaConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.denominator == "official":
        return SophiaG(groups, lr=cfg.lr, betas=tuple(cfg.betas), rho=cfg.rho, eps=cfg.eps, clip=cfg.clip,
                       foreach=cfg.foreach, fused=cfg.fused)
    return SophiaH(groups, lr=cfg.lr, betas=tuple(cfg.betas), rho=cfg.rho, eps=cfg.eps, clip=cfg.clip,
                   denominator=cfg.denominator, foreach=cfg.foreach, fused=cfg.fused)


def _adahessian(model: nn.Module, cfg: AdaHessianConfig, device: torch.device) -> torch.optim.Optimizer:
    return AdaHessian(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, hessian_power=cfg.hessian_power)


def _lion(model: nn.Module, cfg: LionConfig, device: torch.device) -> torch.optim.Optimizer:
    return Lion(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), foreach=cfg.foreach,
                fused=cfg.fused)


def _s3(model: nn.Module, cfg: S3Config, device: torch.device) -> torch.optim.Optimizer:
    return SoftSignSGD(param_groups(model, cfg.weight_decay), lr=cfg.lr, beta=cfg.beta, p=cfg.p, eps=cfg.eps,
                       nesterov=cfg.nesterov, foreach=cfg.foreach, fused=cfg.fused)


def _normalize(model: nn.Module, cfg: NormalizeConfig, device: torch.device) -> torch.optim.Optimizer:
    return NormalizedMomentum(param_groups(model, cfg.weight_decay), lr=cfg.lr, beta=cfg.beta, eps=cfg.eps)


def _muon(model: nn.Module, cfg: MuonConfig, device: torch.device) -> torch.optim.Optimizer:
    hidden, rest = split_for_muon(model)
    adamw_groups = param_groups(rest, cfg.weight_decay)
    return MuonAdamW(hidden, adamw_groups, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                     nesterov=cfg.nesterov, ns_steps=cfg.ns_steps, betas=tuple(cfg.betas), eps=cfg.eps)


#: torch.optim rules that are not element-wise on a matrix: under FSDP they step on whole tensors (optim/whole.py)
WHOLE_TENSOR_RULES = ("Adafactor",)


def check_keyword_types(cls: type, kwargs: dict) -> None:
    """Refuse a keyword whose value is not of its default's kind (torch takes ``amsgrad="maybe"`` as true)."""
    params = inspect.signature(cls.__init__).parameters
    for key, value in kwargs.items():
        default = params[key].default if key in params else inspect.Parameter.empty
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"optim.kwargs.{key} must be true or false for torch.optim.{cls.__name__}, got {value!r}.")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
                isinstance(value, (str, bool)) or not isinstance(value, (int, float))):
            raise ConfigError(f"optim.kwargs.{key} must be a number for torch.optim.{cls.__name__}, got {value!r}.")


def _torch(model: nn.Module, cfg: TorchOptimConfig, device: torch.device) -> torch.optim.Optimizer:
    cls = getattr(torch.optim, cfg.torch_class, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"optim.torch_class={cfg.torch_class!r} is not an optimizer of this torch ({torch.__version__}).")
    check_keyword_types(cls, dict(cfg.kwargs))
    groups = param_groups(model, cfg.weight_decay)
    if cfg.torch_class in WHOLE_TENSOR_RULES and any(is_sharded(p) for g in groups for p in g["params"]):
        cls = whole_tensor_class(cls)
    try:
        return cls(groups, lr=cfg.lr, **dict(cfg.kwargs))
    except (TypeError, ValueError) as e:  # an unknown keyword, or a value torch refuses (momentum -1, rho 2)
        raise ConfigError(f"optim.kwargs {dict(cfg.kwargs)} do not fit torch.optim.{cfg.torch_class}: {e}.") from None


BUILDERS: dict[type, Callable[[nn.Module, OptimConfig, torch.device], torch.optim.Optimizer]] = {
    AdamWConfig: _adamw,
    SophiaConfig: _sophia,
    SophiaHConfig: _sophia,
    AdaHessianConfig: _adahessian,
    LionConfig: _lion,
    S3Config: _s3,
    NormalizeConfig: _normalize,
    MuonConfig: _muon,
    SOAPConfig: lambda model, cfg, device: build_soap(param_groups(model, cfg.weight_decay), cfg, device),
    KronConfig: lambda model, cfg, device: build_kron(param_groups(model, cfg.weight_decay), cfg, device),
    TorchOptimConfig: _torch,
}


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer described by ``cfg`` over ``model``'s parameters."""
    builder = BUILDERS.get(type(cfg))
    if builder is None:
        raise ConfigError(f"no optimizer builder for config type {type(cfg).__name__} (optim={cfg.name}).")
    try:
        return builder(model, cfg, device)
    except ValueError as e:  # what a constructor refuses (fused=true off CUDA, a value out of its range)
        if isinstance(e, ConfigError):
            raise
        hint = (" Leave optim.fused unset (the Triton kernel is then used on CUDA when triton is installed) or set "
                "optim.fused=false." if getattr(cfg, "fused", None) else "")
        raise ConfigError(f"optim={cfg.name} cannot be built on {device}: {e}.{hint}") from None


def hessian_estimator(cfg: OptimConfig) -> str | None:
    """The curvature estimator the optimizer wants every ``hess_interval`` steps (None: none)."""
    est = getattr(cfg, "estimator", None)
    return None if est in (None, "none") else est


def implementation(opt: torch.optim.Optimizer) -> str:
    """Which code path runs ``opt.step()``: "fused triton", "fused", "foreach", "per-tensor" or "" (one path only)."""
    if isinstance(opt, WholeTensorSteps):
        return "whole tensors, gathered one parameter at a time"
    if isinstance(opt, FusedFlatMixin):
        if opt.fused:
            return "fused triton"
        path = "per-tensor" if opt.param_groups[0].get("foreach") is False else "foreach"
        return f"{path}; fused=true fell back: {opt.fused_fallback}" if opt.fused_fallback else path
    group = opt.param_groups[0] if opt.param_groups else {}
    if group.get("fused"):
        return "fused"
    if "foreach" in group:
        return {True: "foreach", False: "per-tensor"}.get(group["foreach"], "torch default")
    return ""
