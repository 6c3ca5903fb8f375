"""Muon for the hidden weight matrices, AdamW for everything else — both from ``torch.optim``.

Muon orthogonalises the momentum of 2-D matrices (Newton-Schulz), which does not suit embeddings,
the tied output head or 1-D tensors; those go to AdamW, as in the usual Muon recipes. With
``adjust_lr_fn="match_rms_adamw"`` Muon's update RMS matches AdamW's, so one peak LR and one
schedule drive both halves. Nothing is re-implemented: this class only holds the two torch
optimizers and shares its ``param_groups`` and ``state`` with them, so the trainer's LR schedule,
``state_dict`` and ``load_state_dict`` work as for any optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch.optim import Optimizer

from sophia_train.config import MuonConfig
from sophia_train.optim._common import evaluate_closure

HAS_MUON = hasattr(torch.optim, "Muon")


def split_for_muon(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(hidden 2-D matrices for Muon, everything else) — embeddings and the tied head are not hidden."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    muon, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            (muon if p.dim() == 2 and id(p) not in embeddings else rest).append(p)
    return muon, rest


class MuonAdamW(Optimizer):
    """``torch.optim.Muon`` on ``muon_params`` and ``torch.optim.AdamW`` on ``adamw_groups``, one LR."""

    def __init__(self, muon_params, adamw_groups, lr: float = MuonConfig.lr, weight_decay: float = MuonConfig.weight_decay,
                 momentum: float = MuonConfig.momentum, nesterov: bool = MuonConfig.nesterov, ns_steps: int = MuonConfig.ns_steps,
                 betas: tuple[float, float] = MuonConfig.betas, eps: float = MuonConfig.eps):
        if not HAS_MUON:
            raise RuntimeError(f"torch {torch.__version__} has no torch.optim.Muon")
        self._muon = torch.optim.Muon(list(muon_params), lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      nesterov=nesterov, ns_steps=ns_steps, adjust_lr_fn="match_rms_adamw")
        self._adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=tuple(betas), eps=eps, foreach=True)
        for g in self._muon.param_groups:
            g["kind"] = "muon"
        for g in self._adamw.param_groups:
            g["kind"] = "adamw"
        # The same group dicts: add_param_group keeps the dict objects it is given.
        super().__init__(self._muon.param_groups + self._adamw.param_groups, defaults={})
        self._link()

    def _link(self) -> None:
        self._muon.param_groups = [g for g in self.param_groups if g["kind"] == "muon"]
        self._adamw.param_groups = [g for g in self.param_groups if g["kind"] == "adamw"]
        self._muon.state = self.state
        self._adamw.state = self.state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One Muon step on the matrices and one AdamW step on the rest."""
        loss = evaluate_closure(closure)
        self._muon.step()
        self._adamw.step()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """Load, then hand the new groups and state back to the two inner optimizers."""
        super().load_state_dict(state_dict)
        self._link()
