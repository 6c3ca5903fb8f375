"""Generate text from a checkpoint (``sophia-sample``): the model shape and tokenizer come from the
checkpoint itself, opened by ``checkpoint.load_run``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from sophia_train.checkpoint.load_run import load_run, resolve_device
from sophia_train.data.tokenizer import tokenizer_from_spec
from sophia_train.errors import ConfigError


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
