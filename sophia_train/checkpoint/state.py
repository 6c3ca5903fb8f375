"""A run's training state as a checkpoint holds it: what is saved (weights, optimizer, RNG, clock),
how it is restored into a plain or an FSDP model, and the finiteness check before a save."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from sophia_train.checkpoint import sharded
from sophia_train.checkpoint.integrity import check_optimizer_shapes, load_error
from sophia_train.checkpoint.io import FORMAT_VERSION
from sophia_train.config import Config
from sophia_train.distributed import all_reduce_mean_
from sophia_train.distributed.parallel import is_sharded, local


def rng_snapshot(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG states a checkpoint keeps (torch's, and the GPU's on CUDA)."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def training_state(step: int, model: nn.Module, optimizer: torch.optim.Optimizer, model_config: Any, cfg: Config,
                   snapshot: dict[str, Any]) -> dict[str, Any]:
    """Everything a resumed run needs, as one checkpoint dict (``snapshot``: RNG, clock and best val loss)."""
    return {**training_meta(step, model_config, cfg, snapshot), "model": model.state_dict(), "optimizer": optimizer.state_dict()}


def training_meta(step: int, model_config: Any, cfg: Config, snapshot: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's entries besides the weights and the optimizer state (all a sharded one keeps in meta.pt)."""
    return {
        "format_version": FORMAT_VERSION,
        "step": step,
        "model_config": dataclasses.asdict(model_config),
        "model_name": cfg.model.name,
        "optim_name": cfg.optim.name,
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
        **snapshot,
    }


def restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
            path: Path | None = None) -> dict[str, float]:
    """Load a checkpoint's weights, optimizer state and RNG; returns its ``step``, ``best_val`` and ``elapsed_s``.

    Either format into either kind of model: a sharded checkpoint (``sharded_folder``) is read by DCP
    straight into FSDP shards (any process count) or whole into a plain model; a one-file checkpoint
    is cut into shards for an FSDP model."""
    fsdp = any(is_sharded(p) for p in model.parameters())
    if state.get("sharded_folder"):
        if fsdp:
            sharded.restore(state["sharded_folder"], model, optimizer)
        else:
            state = {**state, **sharded.to_single_file(state["sharded_folder"])}
    if "model" in state:
        where = Path(state.get("sharded_folder") or path or "the checkpoint")
        try:
            if fsdp:
                sharded.restore_from_single_file(state, model, optimizer)
            else:
                model.load_state_dict(state["model"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise load_error(e, where, "model") from None
        if not fsdp:
            try:
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, KeyError, ValueError, TypeError) as e:
                raise load_error(e, where, "optimizer") from None
    check_optimizer_shapes(optimizer, Path(state.get("sharded_folder") or path or "the checkpoint"))
    rng = state.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    return {"step": int(state["step"]), "best_val": float(state.get("best_val", float("inf"))),
            "elapsed_s": float(state.get("elapsed_s", 0.0))}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The floating-point state tensors of an optimizer (what a checkpoint of it holds besides counters)."""
    return [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v) and v.is_floating_point() and v.numel()]


@torch.no_grad()
def all_finite(tensors: list[torch.Tensor], flagged: torch.Tensor, distributed: bool) -> bool:
    """Whether every tensor is finite and ``flagged`` (a NaN/inf loss seen) is false, on every rank.
    Norms on device first and one host sync; an exact element check confirms a bad norm (a norm can
    overflow where no element does)."""
    tensors = [local(t) for t in tensors]  # FSDP: each rank checks its own shards; the vote below covers all
    device = flagged.device
    norms = torch.stack([n.float() for n in torch._foreach_norm(tensors)]) if tensors else torch.zeros(1, device=device)
    bad = (~torch.isfinite(norms).all() | flagged).float().reshape(1)
    all_reduce_mean_([bad])
    if float(bad) == 0:
        return True
    if flagged or distributed:
        return False
    return all(bool(torch.isfinite(t).all()) for t in tensors)
