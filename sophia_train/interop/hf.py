"""Hugging Face interop: our GPT <-> ``transformers.GPT2LMHeadModel``, both ways, and the tokenizer files.

The two models compute the same function: HF's ``Conv1D`` stores ``(in, out)`` where our ``nn.Linear``
stores ``(out, in)``, so the four projection matrices are transposed; a model trained without biases
is exported with zero biases (and zero LayerNorm biases); ``attn_scale_by_layer`` is GPT2Config's
``scale_attn_by_inverse_layer_idx``; our exact GELU is HF's ``gelu`` and the tanh approximation of
OpenAI's GPT-2 is ``gelu_new``. Needs the optional extra ``pip install sophia_train[hf]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from sophia_train.atomic import atomic_write_text
from sophia_train.checkpoint.load_run import load_run
from sophia_train.errors import ConfigError
from sophia_train.hints import install_command
from sophia_train.model import GPT, GPTConfig

#: Hugging Face's names for the GELU variants, and which of ours each one is.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
OPENAI_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_GPT2_BPE_FILES = {  # the files tiktoken reads for its "gpt2" encoding (cached under TIKTOKEN_CACHE_DIR)
    "vocab": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "merges": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
}


def require_transformers():
    """The ``transformers`` module, or a ConfigError naming the extra to install."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"this needs Hugging Face transformers: {install_command('hf', 'transformers safetensors')}.") from None
    return transformers


def hf_config(g: GPTConfig, eot_token: int | None = None):
    """The ``GPT2Config`` of a model of shape ``g``."""
    transformers = require_transformers()
    return transformers.GPT2Config(
        vocab_size=g.vocab_size, n_positions=g.block_size, n_embd=g.n_embd, n_layer=g.n_layer, n_head=g.n_head,
        n_inner=4 * g.n_embd, activation_function="gelu" if g.activation == "gelu" else "gelu_new",
        resid_pdrop=g.dropout, embd_pdrop=g.dropout, attn_pdrop=g.dropout, layer_norm_epsilon=1e-5,
        scale_attn_weights=True, scale_attn_by_inverse_layer_idx=g.attn_scale_by_layer, tie_word_embeddings=True,
        bos_token_id=eot_token, eos_token_id=eot_token,
    )


def gpt_config_from_hf(hc: Any) -> GPTConfig:
    """Our ``GPTConfig`` for a ``GPT2Config``; refuses what our model cannot express."""
    act = HF_ACTIVATIONS.get(hc.activation_function)
    problems = []
    if act is None:
        problems.append(f"activation {hc.activation_function!r} (supported: {', '.join(HF_ACTIVATIONS)})")
    if hc.n_inner not in (None, 4 * hc.n_embd):
        problems.append(f"n_inner={hc.n_inner} (ours is 4 x n_embd)")
    if not getattr(hc, "scale_attn_weights", True) or getattr(hc, "reorder_and_upcast_attn", False):
        problems.append("unscaled or reordered attention")
    if abs(hc.layer_norm_epsilon - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={hc.layer_norm_epsilon} (ours is 1e-5)")
    if problems:
        raise ConfigError(f"this GPT-2 checkpoint cannot be loaded into sophia_train's GPT: {'; '.join(problems)}.")
    return GPTConfig(n_layer=hc.n_layer, n_head=hc.n_head, n_embd=hc.n_embd, block_size=hc.n_positions,
                     vocab_size=hc.vocab_size, dropout=0.0, bias=True, attn_scale_by_layer=bool(hc.scale_attn_by_inverse_layer_idx),
                     activation=act)


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT2LMHeadModel's names and layouts (zero biases where ours has none)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        out[name] = t.t().contiguous() if name.endswith(_TRANSPOSED) else t.clone()
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)) and name != "lm_head" and getattr(module, "bias", None) is None:
            rows = module.weight.shape[0]
            out[f"{name}.bias"] = torch.zeros(rows, dtype=module.weight.dtype)
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel weights under our names and layouts (HF's attention-mask buffers dropped)."""
    out = {}
    for name, t in sd.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        out[name] = t.t().contiguous() if name.endswith(_TRANSPOSED) else t
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def to_hf_model(model: GPT, eot_token: int | None = None):
    """A ``GPT2LMHeadModel`` (fp32, eval mode) computing the same logits as ``model``."""
    transformers = require_transformers()
    hf = transformers.GPT2LMHeadModel(hf_config(model.config, eot_token))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model.float().cpu()), strict=False)
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise RuntimeError(f"HF export: missing {missing}, unexpected {unexpected}")
    return hf.eval()


def load_hf_gpt2(name_or_path: str, device: str | torch.device = "cpu") -> GPT:
    """Our GPT holding the weights of a Hugging Face GPT-2 (a hub name such as ``gpt2-medium``, from the local
    cache when offline, or a folder with config.json and the weights)."""
    transformers = require_transformers()
    local = Path(name_or_path).expanduser()
    source = str(local) if local.exists() else name_or_path
    if local.exists() and not (local / "config.json").is_file():
        raise ConfigError(f"init_from={name_or_path}: {local} has no config.json; point it at a Hugging Face model folder "
                          f"(export_hf writes one) or at a sophia_train run folder / ckpt.pt.")
    try:
        hf = transformers.GPT2LMHeadModel.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError, EnvironmentError) as e:
        raise ConfigError(
            f"init_from={name_or_path}: the weights could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:300]}). "
            f"Without internet they must already be in the Hugging Face cache (HF_HOME; download once with "
            f"`huggingface-cli download {name_or_path}` on a connected machine) or in a local folder given as init_from=PATH."
        ) from None
    model = GPT(gpt_config_from_hf(hf.config))
    model.load_state_dict(from_hf_state_dict(hf.state_dict()))
    return model.to(device)


# -- tokenizers --------------------------------------------------------------------------------------

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def hf_tokenizer(spec: dict):
    """A ``transformers`` tokenizer that maps text to the same ids as the training data's tokenizer."""
    transformers = require_transformers()
    name = spec.get("name")
    if name == "gpt2":
        from tiktoken.load import read_file_cached

        try:
            vocab = json.loads(read_file_cached(_GPT2_BPE_FILES["vocab"]))
            merges = read_file_cached(_GPT2_BPE_FILES["merges"]).decode("utf-8").split("\n")[1:]
        except Exception as e:
            raise ConfigError(f"the GPT-2 BPE files are not in tiktoken's cache (set TIKTOKEN_CACHE_DIR): {type(e).__name__}: {e}") from None
        merges = [tuple(m.split(" ")) for m in merges if m.strip()]
        return transformers.GPT2Tokenizer(vocab=vocab, merges=merges)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if name == "byte":  # each UTF-8 byte is one token: byte b is id b
        b2u = bytes_to_unicode()
        tok = Tokenizer(models.BPE(vocab={b2u[b]: b for b in range(256)}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
    elif name == "char":  # nanoGPT's character vocabulary: character i is id i
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(spec["chars"])}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
        tok.decoder = decoders.Fuse()
    else:
        raise ConfigError(f"no Hugging Face tokenizer for the {name!r} tokenizer.")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)


TOKENIZER_NOTES = {
    "gpt2": "The tokenizer is OpenAI's GPT-2 BPE (the same ids as tiktoken's `gpt2`), so `AutoTokenizer` works as usual.",
    "byte": "This model was trained on raw UTF-8 bytes (token id = byte value, vocabulary 256), not on GPT-2 BPE. "
            "The tokenizer saved here is a byte-level tokenizer written for this export: with it `AutoTokenizer` "
            "reproduces the training ids exactly. Do not pair these weights with the GPT-2 tokenizer.",
    "char": "This model was trained on nanoGPT's character vocabulary (id i = the i-th character of the training text's "
            "sorted alphabet). The tokenizer saved here maps each character to that id; characters outside the "
            "alphabet have no id.",
}


# -- export -----------------------------------------------------------------------------------------

def export_hf(run: str | os.PathLike, out: str | os.PathLike, device: str = "cpu") -> Path:
    """Write a run's model as a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer, README.md)."""

    loaded = load_run(run, device)
    tok_spec = loaded.tokenizer_spec
    tokenizer = hf_tokenizer(tok_spec)
    eot = tokenizer.eos_token_id if tok_spec.get("name") == "gpt2" else None
    hf = to_hf_model(loaded.model, eot)
    require_transformers().utils.logging.disable_progress_bar()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    cfg = loaded.config
    lines = [
        f"# {cfg.get('run_name', 'sophia_train model')}",
        "",
        f"Exported by sophia_train from `{loaded.path}` (step {loaded.step}, val loss {loaded.val_loss:.4f}).",
        f"Model {cfg['model']['name']}, optimizer {cfg['optim']['name']} (lr {cfg['optim']['lr']:g}), data {cfg['data']['name']}.",
        "",
        TOKENIZER_NOTES.get(tok_spec.get("name"), ""),
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained({str(out)!r})",
        f"tokenizer = AutoTokenizer.from_pretrained({str(out)!r})",
        "```",
    ]
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/export_hf.py`` / ``sophia-export-hf``."""
    ap = argparse.ArgumentParser(description="Export a run's model as a Hugging Face GPT-2 folder (config.json + model.safetensors + tokenizer).")
    ap.add_argument("run", help="run folder (holding ckpt.pt) or a checkpoint file")
    ap.add_argument("--out", help="output folder (default: RUN/hf)")
    args = ap.parse_args(argv)
    try:
        run = Path(args.run)
        out = export_hf(run, args.out or (run / "hf" if run.is_dir() else run.parent / f"hf_{run.stem}"))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")


if __name__ == "__main__":
    main()
