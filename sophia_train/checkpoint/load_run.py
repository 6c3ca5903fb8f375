"""Open a finished run outside training: ``load_run`` is the one way (sampling, export, evaluation,
inspection). The model shape and tokenizer come from the checkpoint itself, so no data folder is needed;
checkpoints older than recorded tokenizers fall back to the ``meta.json`` of the data folder they name."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sophia_train.checkpoint.io import CHECKPOINT_NAME, checkpoint_at, load_checkpoint, saved_model_config
from sophia_train.checkpoint.sharded import SHARDED_NAME
from sophia_train.errors import ConfigError
from sophia_train.metrics import read_metrics
from sophia_train.model import GPT, GPTConfig


@dataclass
class LoadedRun:
    """A trained model with what describes it: its config, tokenizer, step and validation loss."""

    model: GPT
    config: dict[str, Any]
    tokenizer_spec: dict
    step: int
    val_loss: float  # at the checkpoint's step when the run's metrics.jsonl has it, else the best seen
    path: Path


def checkpoint_file(run: str | os.PathLike) -> Path:
    """A run folder's checkpoint (``ckpt.pt``, or ``ckpt.dcp`` of an FSDP run), ``run`` itself for a file."""
    return checkpoint_at(run)


def tokenizer_spec_of(state: dict[str, Any]) -> dict:
    """The tokenizer a checkpoint was trained with (from the checkpoint, else its data folder's meta.json)."""
    if "tokenizer" in state:
        return dict(state["tokenizer"])
    meta_file = Path(state["config"]["data"]["dir"]) / "meta.json"
    if not meta_file.is_file():
        raise ConfigError(f"this checkpoint predates recorded tokenizers and {meta_file} is missing: "
                          f"run from the folder it was trained in, or set the data folder back.")
    return {"name": json.loads(meta_file.read_text())["tokenizer"]}


def val_loss_at(folder: Path, step: int, fallback: float) -> float:
    """The val loss logged at ``step`` in ``folder/metrics.jsonl`` (``fallback`` when absent)."""
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        for row in reversed(read_metrics(metrics)):
            if row.get("kind") == "eval" and row.get("step") == step:
                return float(row["val_loss"])
    return fallback


def load_run(run: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRun:
    """The trained GPT of a run folder (or checkpoint file), in eval mode, with its config and tokenizer."""
    path = checkpoint_file(run)
    if not path.exists():
        raise ConfigError(f"no checkpoint at {path}: give a run folder holding {CHECKPOINT_NAME} or {SHARDED_NAME} "
                          f"(train.out_dir of a run) or a checkpoint file.")
    state = load_checkpoint(path, map_location=device)
    model = GPT(GPTConfig(**saved_model_config(state))).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    step = int(state["step"])
    val = val_loss_at(path.parent, step, float(state.get("best_val", math.nan)))
    return LoadedRun(model, state["config"], tokenizer_spec_of(state), step, val, path)


def load_model(run: str | os.PathLike, device: str = "cpu") -> tuple[GPT, dict]:
    """The trained GPT of a run folder (or checkpoint file) and the checkpoint's saved config."""
    loaded = load_run(run, device)
    return loaded.model, loaded.config


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other names unchanged."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
    return name


