"""``init_from``: start a run from pretrained weights (nanoGPT's option of the same name).

``init_from`` is ``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl`` (or any Hugging Face GPT-2 id,
read from the local hub cache when offline), a folder holding a Hugging Face GPT-2 (``config.json`` +
weights, e.g. one written by ``export_hf``), or a sophia_train run folder / ``ckpt.pt`` (its weights; the
optimizer starts fresh). The source fixes the model's shape: without ``+model`` the model config is
built from it; with ``+model`` its layers, heads and width must agree, and the rest (bias, vocabulary,
block size, activation) is taken from the source. Only ``model.dropout`` stays the user's, as in nanoGPT.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from sophia_train.checkpoint import checkpoint_at, load_checkpoint_meta, saved_model_config
from sophia_train.checkpoint.load_run import checkpoint_file, load_run, tokenizer_spec_of
from sophia_train.config import ModelConfig
from sophia_train.errors import ConfigError
from sophia_train.interop.hf import gpt_config_from_hf, load_hf_gpt2, require_transformers
from sophia_train.model import GPT

SHAPE_KEYS = ("n_layer", "n_head", "n_embd")  # must agree with a +model the user chose
TAKEN_KEYS = ("block_size", "vocab_size", "bias", "attn_scale_by_layer", "activation")  # always the source's


def is_run(init_from: str) -> bool:
    """Whether ``init_from`` names a sophia_train run folder or checkpoint file (else a Hugging Face model)."""

    return checkpoint_at(init_from).exists()


def source_model(init_from: str) -> tuple[dict[str, Any], dict | None]:
    """The source's model fields (``GPTConfig`` names) and its tokenizer spec when known."""
    if is_run(init_from):

        state = load_checkpoint_meta(checkpoint_file(init_from))  # the weights are read once, by load_init_weights
        return saved_model_config(state), tokenizer_spec_of(state)

    transformers = require_transformers()
    local = Path(init_from).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ConfigError(f"init_from={init_from}: {local} holds neither a Hugging Face model (config.json) nor a "
                          f"sophia_train checkpoint (ckpt.pt).")
    try:
        hc = transformers.AutoConfig.from_pretrained(str(local) if local.exists() else init_from)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"init_from={init_from}: no such model could be found ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"Use gpt2, gpt2-medium, gpt2-large or gpt2-xl (already in the Hugging Face cache when offline: download once "
            f"with `huggingface-cli download {init_from}` on a connected machine), a Hugging Face model folder, or a run folder."
        ) from None
    if getattr(hc, "model_type", "gpt2") != "gpt2":
        raise ConfigError(f"init_from={init_from} is a {hc.model_type!r} model; only GPT-2 checkpoints fit this model.")
    g = gpt_config_from_hf(hc)
    tok = {"name": "gpt2"} if g.vocab_size >= 50257 else None
    return {k: getattr(g, k) for k in (*SHAPE_KEYS, *TAKEN_KEYS)}, tok


def model_name_for(init_from: str) -> str:
    """A model name for run folders: the hub id, or the source folder's name."""
    p = Path(init_from).expanduser()
    base = (p.parent.name if p.is_file() else p.name) if p.exists() else init_from
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base) or "pretrained"


def apply_init_from(node: Any) -> None:
    """Fill or check the ``model`` node of a composed config from ``init_from`` (a no-op without it)."""

    init_from = node.get("init_from")
    if not init_from or init_from == "scratch":
        return
    fields, _ = source_model(init_from)
    if node.get("model") is None:
        node.model = OmegaConf.structured(ModelConfig(name=model_name_for(init_from), **fields))
        return
    clash = {k: (node.model[k], fields[k]) for k in SHAPE_KEYS if node.model[k] != fields[k]}
    if clash:
        diff = ", ".join(f"{k}={a} (source {b})" for k, (a, b) in clash.items())
        raise ConfigError(f"+model={node.model.name} does not have the shape of init_from={init_from}: {diff}. "
                          f"Drop +model to take the shape from the source, or choose the matching model.")
    for k in TAKEN_KEYS:
        node.model[k] = fields[k]


def check_tokenizer(init_from: str, dataset_spec: dict, data_name: str) -> None:
    """Refuse data tokenized differently from what the pretrained weights were trained on."""
    _, spec = source_model(init_from)
    if spec is not None and spec != dataset_spec:
        raise ConfigError(f"init_from={init_from} was trained on {spec['name']} tokens but data {data_name!r} is tokenized "
                          f"with {dataset_spec.get('name')!r}: choose data prepared with the same tokenizer "
                          f"(e.g. data=corpus_gpt2 or data=openwebtext for GPT-2).")


@torch.no_grad()
def load_init_weights(init_from: str, model: GPT) -> None:
    """Copy the source's weights into ``model`` (same shape, checked by ``apply_init_from``)."""
    if is_run(init_from):

        source = load_run(init_from).model
    else:

        source = load_hf_gpt2(init_from)
    model.load_state_dict(source.state_dict())
