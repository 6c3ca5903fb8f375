"""Generate text from a checkpoint: the model shape and tokenizer come from the checkpoint itself.

``load_run`` is the one way to open a trained model outside training (sampling, export, evaluation,
inspection). Checkpoints record their tokenizer, so no data folder is needed; checkpoints older than
that fall back to the ``meta.json`` of the data folder they name.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sophia_train.checkpoint import CHECKPOINT_NAME, checkpoint_at, load_checkpoint, saved_model_config
from sophia_train.errors import ConfigError
from sophia_train.metrics import read_metrics
from sophia_train.model import GPT, GPTConfig
from sophia_train.sharded_checkpoint import SHARDED_NAME
from sophia_train.tokenizer import tokenizer_from_spec


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


def read_prompt(prompt: str) -> str:
    """The prompt text; ``FILE:path`` reads it from a file (nanoGPT's convention)."""
    if prompt.startswith("FILE:"):
        path = Path(prompt[5:]).expanduser()
        if not path.is_file():
            raise ConfigError(f"prompt file {path} not found.")
        return path.read_text(encoding="utf-8")
    return prompt


def generate_samples(run: str | os.PathLike, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 0.8,
                     top_k: int | None = 40, seed: int = 0, device: str = "cpu", num_samples: int = 1) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (``FILE:path`` allowed) by the run's model, tokenized as its training data was."""
    if temperature <= 0 or max_new_tokens < 0 or num_samples < 1 or (top_k is not None and top_k < 1):
        raise ConfigError("--temperature must be > 0, --max-new-tokens >= 0, --num-samples >= 1 and --top-k >= 1.")
    device = resolve_device(device)
    loaded = load_run(run, device)
    tok = tokenizer_from_spec(loaded.tokenizer_spec)
    ids = tok.encode_ordinary(read_prompt(prompt)) or [tok.eot_token if tok.eot_token is not None else 0]
    ids = ids[-loaded.model.config.block_size:]
    torch.manual_seed(seed)
    x = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    out = loaded.model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, vocab_limit=tok.vocab_size)
    return [tok.decode(row.tolist()) for row in out]


def generate_text(run: str | os.PathLike, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 0.8,
                  top_k: int | None = 40, seed: int = 0, device: str = "cpu") -> str:
    """One continuation of ``prompt`` by the run's model (see ``generate_samples``)."""
    return generate_samples(run, prompt, max_new_tokens, temperature, top_k, seed, device)[0]


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/sample.py`` / ``sophia-sample``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description='Sample text from a trained run: `python scripts/sample.py runs/demo --prompt "And God said" -n 300`.')
    ap.add_argument("run", help="run folder (holding ckpt.pt) or a checkpoint file")
    ap.add_argument("--prompt", default="\n", help="the text to continue, or FILE:path to read it from a file")
    ap.add_argument("-n", "--max-new-tokens", type=int, default=200)
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.8, help="> 1 more random, < 1 more conservative")
    ap.add_argument("--top-k", type=int, default=40, help="keep the k most likely tokens at each step (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    args = ap.parse_args(argv)
    try:
        samples = generate_samples(args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k or None,
                                args.seed, args.device, args.num_samples)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    for i, text in enumerate(samples):
        if len(samples) > 1:
            print(f"---------- sample {i + 1}/{len(samples)} ----------")
        print(text)
