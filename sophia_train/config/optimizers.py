"""The optimizer schemas: one dataclass per optimizer (the one place its defaults live), each checking
its own fields (``check``), and ``OPTIM_SCHEMAS``, the Hydra schema name of each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from sophia_train.config.checks import check_curvature_hook, finite, in_range, require


@dataclass
class OptimConfig:
    """Fields every optimizer has; each optimizer's schema adds its own.

    The schemas are the one place an optimizer's defaults live: the optimizer classes take their
    signature defaults from them, and the YAML files under configs/optim/ state only what differs."""

    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = 0.0

    def check(self) -> None:
        """Refuse impossible values of the fields every optimizer has (``ConfigError``); subclasses add theirs."""
        require(finite(self.lr) and self.lr > 0, f"optim.lr must be a positive number, got {self.lr}.")
        require(finite(self.weight_decay) and self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}.")
        eps = getattr(self, "eps", None)
        if eps is not None:
            require(finite(eps) and eps > 0, f"optim.eps must be a positive number, got {eps}.")
        betas = getattr(self, "betas", None)
        if betas is not None:
            require(len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
                     f"optim.betas must be two numbers in [0, 1), got {list(betas)}.")


@dataclass
class AdamWConfig(OptimConfig):
    """torch.optim.AdamW (fused on CUDA, foreach elsewhere); paper Sec. 3.1 baseline settings."""

    name: str = "adamw"
    lr: float = 6e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1


@dataclass
class SophiaConfig(OptimConfig):
    """The Sophia family: Sophia-G/-H and the paper's ablations (Sec. 3.5), one update rule.

    ``denominator`` (the name the kernel uses too): ``official`` = SophiaG, rho*bs*max(h, 0) + eps with bs =
    tokens per step; ``max`` = Sophia-H, paper Eq. (6) max(rho*h, eps) with rho playing gamma; ``max_sqrt`` =
    AH+clip, an EMA of h_hat^2 and max(rho*sqrt(h), eps). ``estimator`` feeds ``h`` every
    ``hess_interval`` steps on ``hess_fraction`` of each micro-batch's sequences (paper: GNB 240 of
    480, Hutchinson 32 of 480). ``clip=false`` drops the min(., 1).
    """

    name: str = "sophia_g"
    denominator: str = "official"
    lr: float = 6e-4  # Table 2, GPT-2 small
    betas: tuple[float, float] = (0.965, 0.99)  # Sec. 3.1 and the official code
    rho: float = 0.05
    eps: float = 1e-15
    weight_decay: float = 0.2
    estimator: str = "gnb"
    hess_interval: int = 10  # k (Sec. 3.1)
    hess_fraction: float = 0.5  # GNB on 240 of 480 sequences
    clip: bool = True
    fused: Optional[bool] = None  # Triton kernel over flat buffers; None: on CUDA when triton is installed
    foreach: Optional[bool] = None  # torch._foreach_* path; false: the per-tensor loop

    def check(self) -> None:
        """Sophia's own ranges, and an estimator from the one registry (``curvature.ESTIMATORS``)."""
        super().check()
        require(finite(self.rho) and self.rho > 0, f"optim.rho must be positive and finite, got {self.rho}.")
        names = ("official", "max", "max_sqrt")  # the kernel's DENOMINATORS
        require(self.denominator in names, f"optim.denominator must be one of {', '.join(names)}, got {self.denominator!r}.")
        check_curvature_hook(self)


@dataclass
class SophiaHConfig(SophiaConfig):
    """Sophia-H (Alg. 1 + 3, Eq. 6): Hutchinson on 32 of 480 sequences, gamma = 0.01 (Sec. 3.1)."""

    name: str = "sophia_h"
    denominator: str = "max"
    betas: tuple[float, float] = (0.96, 0.99)
    rho: float = 0.01  # the paper's gamma
    eps: float = 1e-12
    estimator: str = "hutchinson"
    hess_fraction: float = 0.0667  # 32 / 480


@dataclass
class AdaHessianConfig(OptimConfig):
    """AdaHessian (Yao et al. 2021) with the paper's betas (0.92, 0.99); Hutchinson every k steps."""

    name: str = "adahessian"
    lr: float = 6e-4
    betas: tuple[float, float] = (0.92, 0.99)
    eps: float = 1e-4
    weight_decay: float = 0.1
    hessian_power: float = 1.0
    estimator: str = "hutchinson"
    hess_interval: int = 1
    hess_fraction: float = 0.0667

    def check(self) -> None:
        """AdaHessian's ranges: Hutchinson only, Hessian power k in [0, 1] (Yao et al. 2021, Eq. 9)."""
        super().check()
        in_range("optim.hessian_power", self.hessian_power, 0, 1, hi_closed=True)
        check_curvature_hook(self)
        require(self.estimator == "hutchinson", "AdaHessian needs optim.estimator=hutchinson.")


@dataclass
class LionConfig(OptimConfig):
    """Lion with the Sophia paper's baseline betas (0.95, 0.98) and wd 0.2."""

    name: str = "lion"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.95, 0.98)
    weight_decay: float = 0.2
    foreach: Optional[bool] = None  # None: foreach lists (chunked on CPU); False: the per-tensor loop
    fused: Optional[bool] = None  # Triton kernel over flat buffers; None: on CUDA when triton is installed


@dataclass
class S3Config(OptimConfig):
    """SoftSignSGD (S3 paper Alg. 1): one beta, p-th order denominator, Nesterov form."""

    name: str = "s3"
    lr: float = 3e-4
    beta: float = 0.95
    p: float = 3.0
    eps: float = 1e-8
    weight_decay: float = 0.1
    nesterov: bool = True
    foreach: Optional[bool] = None  # None: foreach lists (chunked on CPU); False: the per-tensor loop
    fused: Optional[bool] = None  # Triton kernel over flat buffers; None: on CUDA when triton is installed

    def check(self) -> None:
        """SoftSignSGD's ranges (S3 paper Alg. 1): beta in [0, 1), p >= 1."""
        super().check()
        require(0 <= self.beta < 1 and self.p >= 1, f"optim.beta must be in [0, 1) and optim.p >= 1, got beta={self.beta}, p={self.p}.")


@dataclass
class NormalizeConfig(OptimConfig):
    """The paper's "Normalize" ablation: momentum rescaled to unit RMS per tensor."""

    name: str = "normalize"
    lr: float = 2e-4
    beta: float = 0.965
    eps: float = 1e-12
    weight_decay: float = 0.2

    def check(self) -> None:
        """The momentum's beta in [0, 1)."""
        super().check()
        in_range("optim.beta", self.beta, 0, 1)


@dataclass
class MuonConfig(OptimConfig):
    """torch.optim.Muon on hidden matrices + AdamW on the rest, one LR (Muon's match_rms_adamw)."""

    name: str = "muon"
    lr: float = 1e-3
    weight_decay: float = 0.1
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8

    def check(self) -> None:
        """Muon's momentum in [0, 1) and at least one Newton-Schulz step."""
        super().check()
        in_range("optim.momentum", self.momentum, 0, 1)
        require(self.ns_steps >= 1, f"optim.ns_steps (Newton-Schulz iterations) must be >= 1, got {self.ns_steps}.")


@dataclass
class SOAPConfig(OptimConfig):
    """SOAP (Vyas et al. 2024, "SOAP: Improving and Stabilizing Shampoo using Adam"): Adam run in the
    eigenbasis of Shampoo's preconditioner, refreshed every ``precondition_frequency`` steps; the
    paper's defaults, run by ``heavyball.SOAP`` (the ``peers`` extra)."""

    name: str = "soap"
    lr: float = 3e-3
    betas: tuple[float, float] = (0.95, 0.95)
    shampoo_beta: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.01
    precondition_frequency: int = 10
    max_precond_dim: int = 2048  # dimensions larger than this (the vocabulary) are not preconditioned

    def check(self) -> None:
        """SOAP's ranges: a preconditioner refreshed at least every step's worth, dimensions >= 1."""
        super().check()
        in_range("optim.shampoo_beta", self.shampoo_beta, 0, 1)
        require(self.precondition_frequency >= 1, f"optim.precondition_frequency must be >= 1 (steps), got {self.precondition_frequency}.")
        require(self.max_precond_dim >= 1, f"optim.max_precond_dim must be >= 1, got {self.max_precond_dim}.")


@dataclass
class KronConfig(OptimConfig):
    """PSGD Kron (Li 2018, "Preconditioner on Matrix Lie Group for SGD"; the Kronecker-factored form of
    kron_torch): momentum preconditioned by a learned Kronecker-factored matrix; ``heavyball.PSGDKron``."""

    name: str = "kron"
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)  # betas[0]: the momentum
    weight_decay: float = 0.0
    precond_lr: float = 0.1
    max_size_triangular: int = 8192  # larger dimensions get a diagonal factor

    def check(self) -> None:
        """Kron's preconditioner learning rate in (0, 1] and dimensions >= 1."""
        super().check()
        in_range("optim.precond_lr", self.precond_lr, 0, 1, lo_closed=False, hi_closed=True)
        require(self.max_size_triangular >= 1, f"optim.max_size_triangular must be >= 1, got {self.max_size_triangular}.")


@dataclass
class TorchOptimConfig(OptimConfig):
    """Any ``torch.optim`` class by name; ``kwargs`` go to its constructor unchanged."""

    name: str = MISSING
    torch_class: str = MISSING
    lr: float = 1e-3
    weight_decay: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)



OPTIM_SCHEMAS: dict[str, type] = {
    "adamw": AdamWConfig,
    "sophia": SophiaConfig,
    "sophia_h": SophiaHConfig,
    "adahessian": AdaHessianConfig,
    "lion": LionConfig,
    "s3": S3Config,
    "normalize": NormalizeConfig,
    "muon": MuonConfig,
    "soap": SOAPConfig,
    "kron": KronConfig,
    "torch": TorchOptimConfig,
}

