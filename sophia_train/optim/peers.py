"""Today's matrix-preconditioned peers, run by the maintained library that implements them (heavyball).

Nothing is re-implemented here: ``build_soap`` / ``build_kron`` hand our parameter groups (the one
grouping rule) and the schema's defaults (``SOAPConfig``, ``KronConfig``: the papers' values) to
``heavyball.SOAP`` / ``heavyball.PSGDKron``. heavyball compiles its update with ``torch.compile`` by
default; off CUDA that compile costs minutes on small models, so it is turned off there.
"""

from __future__ import annotations

import warnings

import torch

from sophia_train.config import KronConfig, SOAPConfig
from sophia_train.errors import ConfigError
from sophia_train.hints import install_command


def require_heavyball():
    """The heavyball module, or a one-paragraph error saying how to install it."""
    try:
        import heavyball
    except ImportError:
        raise ConfigError(
            f"optim=soap and optim=kron run on the heavyball library, which is not installed: "
            f"{install_command('peers', 'heavyball')}."
        ) from None
    return heavyball


def _prepare(device: torch.device):
    heavyball = require_heavyball()
    if device.type != "cuda":
        heavyball.utils.compile_mode = None  # eager on CPU: inductor would compile every transform first
    # the trainer sets each step's LR from its schedule; heavyball notes the change once per run
    warnings.filterwarnings("ignore", message="Learning rate changed between steps")
    return heavyball


def build_soap(groups: list[dict], cfg: SOAPConfig, device: torch.device) -> torch.optim.Optimizer:
    """``heavyball.SOAP`` over ``groups`` with ``cfg``'s hyperparameters."""
    heavyball = _prepare(device)
    return heavyball.SOAP(groups, lr=cfg.lr, betas=tuple(cfg.betas), shampoo_beta=cfg.shampoo_beta, eps=cfg.eps,
                          weight_decay=cfg.weight_decay, precondition_frequency=cfg.precondition_frequency,
                          max_precond_dim=cfg.max_precond_dim)


def build_kron(groups: list[dict], cfg: KronConfig, device: torch.device) -> torch.optim.Optimizer:
    """``heavyball.PSGDKron`` over ``groups`` with ``cfg``'s hyperparameters."""
    heavyball = _prepare(device)
    return heavyball.PSGDKron(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                              precond_lr=cfg.precond_lr, max_size_triangular=cfg.max_size_triangular)
