"""Generate text from a checkpoint: the model shape and tokenizer come from the checkpoint itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .config import ConfigError
from .model import GPT, GPTConfig
from .tokenizer import get_tokenizer


def load_model(run: str | os.PathLike, device: str = "cpu") -> tuple[GPT, dict]:
    """The trained GPT of a run folder (or checkpoint file) and the checkpoint's saved config."""
    path = Path(run)
    state = load_checkpoint(path / CHECKPOINT_NAME if path.is_dir() else path, map_location=device)
    model = GPT(GPTConfig(**state["model_config"])).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state["config"]


def generate_text(run: str | os.PathLike, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 0.8,
                  top_k: int | None = 40, seed: int = 0, device: str = "cpu") -> str:
    """Continue ``prompt`` with the run's model, tokenized as its training data was."""
    model, cfg = load_model(run, device)
    meta_file = Path(cfg["data"]["dir"]) / "meta.json"
    if not meta_file.is_file():
        raise ConfigError(f"{meta_file} is missing: the tokenizer of this run's data cannot be determined.")
    tok = get_tokenizer(json.loads(meta_file.read_text())["tokenizer"])
    ids = tok.encode_ordinary(prompt) or [0]
    torch.manual_seed(seed)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    out = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k)
    return tok.decode(out[0].tolist())


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/sample.py``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description='Sample text from a trained run: `python scripts/sample.py runs/demo --prompt "And God said" -n 300`.')
    ap.add_argument("run", help="run folder (holding ckpt.pt) or a checkpoint file")
    ap.add_argument("--prompt", default="\n")
    ap.add_argument("-n", "--max-new-tokens", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        print(generate_text(args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed))
    except ConfigError as e:
        sys.exit(f"error: {e}")
