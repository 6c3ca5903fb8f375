"""Print what a checkpoint holds: step, model, optimizer, data, val loss: ``sophia-inspect RUN [--config] [--json]``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from omegaconf import OmegaConf

from sophia_train.checkpoint import load_checkpoint, saved_model_config
from sophia_train.checkpoint.load_run import checkpoint_file, val_loss_at
from sophia_train.errors import ConfigError
from sophia_train.metrics import format_duration


def describe(run: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's summary as plain data (no model is built)."""
    path = checkpoint_file(run)
    if not path.exists():
        raise ConfigError(f"no checkpoint at {path}: give a run folder holding ckpt.pt or ckpt.dcp (or best.pt) or a checkpoint file.")
    state = load_checkpoint(path, mmap=True)  # counting parameters needs their shapes, not their values
    cfg = state.get("config", {})
    shape = saved_model_config(state)
    # the banner's rule (GPT.num_params, nanoGPT's): the tied head counted once, the position embeddings not at all
    n_params = sum(v.numel() for k, v in state["model"].items() if k not in ("lm_head.weight", "transformer.wpe.weight"))
    step = int(state["step"])
    t = cfg.get("train", {})
    seq_len = t.get("seq_len") or shape["block_size"]
    best = float(state.get("best_val", math.nan))
    return {
        "path": str(path), "step": step, "max_steps": t.get("max_steps"),
        "val_loss": val_loss_at(path.parent, step, math.nan), "best_val_loss": best,
        "model": state.get("model_name"), "shape": shape, "n_params": n_params,
        "optim": state.get("optim_name"), "lr": cfg.get("optim", {}).get("lr"),
        "data": cfg.get("data", {}).get("name"), "tokenizer": state.get("tokenizer", {}).get("name", "unknown (old checkpoint)"),
        "seq_len": seq_len, "elapsed_s": float(state.get("elapsed_s", 0.0)), "config": cfg,
    }


def summary_lines(d: dict[str, Any]) -> list[str]:
    """Human-readable lines of ``describe``'s result."""
    s = d["shape"]
    val = f"{d['val_loss']:.4f}" if math.isfinite(d["val_loss"]) else "not in metrics.jsonl"
    return [
        f"checkpoint {d['path']}",
        f"  step       {d['step']} of {d['max_steps']}",
        f"  val loss   {val} at this step | best {d['best_val_loss']:.4f}",
        f"  model      {d['model']}: {d['n_params'] / 1e6:.2f}M parameters (non-embedding rule of nanoGPT), "
        f"{s['n_layer']}L/{s['n_head']}H/{s['n_embd']}d, "
        f"block {s['block_size']}, vocab {s['vocab_size']}, bias {s['bias']}, {s['activation']}",
        f"  optimizer  {d['optim']} lr {d['lr']}",
        f"  data       {d['data']} ({d['tokenizer']} tokens, sequences of {d['seq_len']})",
        f"  trained    {format_duration(d['elapsed_s'])} of wall-clock",
    ]


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/inspect_ckpt.py`` / ``sophia-inspect``."""
    ap = argparse.ArgumentParser(description="Print a checkpoint's step, model, optimizer, data and val loss.")
    ap.add_argument("run", help="run folder (holding ckpt.pt) or a checkpoint file (e.g. RUN/best.pt)")
    ap.add_argument("--config", action="store_true", help="also print the run's full config (YAML)")
    ap.add_argument("--json", action="store_true", help="print everything as one JSON object")
    args = ap.parse_args(argv)
    try:
        d = describe(args.run)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return
    print("\n".join(summary_lines(d)))
    if args.config:
        print(OmegaConf.to_yaml(OmegaConf.create(d["config"])))


if __name__ == "__main__":
    main()
