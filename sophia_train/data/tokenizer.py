"""Tokenizers behind one small interface: GPT-2 BPE (tiktoken), raw UTF-8 bytes, and the character
vocabularies of nanoGPT's ``meta.pkl`` (shakespeare_char).

A tokenizer is described by a small JSON-able *spec* (``{"name": "gpt2"}``, ``{"name": "char",
"chars": [...]}``) that checkpoints keep, so a model can be sampled or exported without its data folder.

The GPT-2 BPE files are fetched by tiktoken on first use; offline, point ``TIKTOKEN_CACHE_DIR`` at a
folder that holds them (tiktoken's own cache layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from sophia_train.errors import ConfigError


@dataclass(frozen=True)
class Tokenizer:
    """``encode`` a document to token ids (EOT appended where the tokenizer has one); ``decode`` back."""

    name: str
    vocab_size: int
    eot_token: Optional[int]
    encode_ordinary: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]

    def encode_document(self, text: str) -> list[int]:
        """Token ids of one document followed by the end-of-text token (a blank line where there is none)."""
        if self.eot_token is None:
            return self.encode_ordinary(text + "\n\n")
        ids = self.encode_ordinary(text)
        ids.append(self.eot_token)
        return ids


def _byte_tokenizer() -> Tokenizer:
    return Tokenizer(
        name="byte",
        vocab_size=256,
        eot_token=None,
        encode_ordinary=lambda s: list(s.encode("utf-8")),
        decode=lambda ids: bytes(int(i) for i in ids).decode("utf-8", errors="replace"),
    )


def _gpt2_tokenizer() -> Tokenizer:
    import tiktoken

    try:
        enc = tiktoken.get_encoding("gpt2")
    except Exception as e:  # network failure inside tiktoken's downloader
        raise ConfigError(
            "the GPT-2 BPE files could not be loaded by tiktoken (it downloads them on first use). "
            "On a machine without internet set TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached "
            f"files for the 'gpt2' encoding. Cause: {type(e).__name__}: {e}"
        ) from None
    return Tokenizer(
        name="gpt2",
        vocab_size=enc.n_vocab,
        eot_token=enc.eot_token,
        encode_ordinary=enc.encode_ordinary,
        decode=enc.decode,
    )


def char_tokenizer(chars: list[str]) -> Tokenizer:
    """A character-level tokenizer: id ``i`` is ``chars[i]`` (nanoGPT's ``itos``); unknown characters are refused."""
    stoi = {c: i for i, c in enumerate(chars)}

    def encode(text: str) -> list[int]:
        unknown = sorted({c for c in text if c not in stoi})
        if unknown:
            raise ConfigError(f"the text holds characters outside this model's {len(chars)}-character vocabulary: {unknown[:10]}.")
        return [stoi[c] for c in text]

    return Tokenizer(name="char", vocab_size=len(chars), eot_token=None, encode_ordinary=encode,
                     decode=lambda ids: "".join(chars[int(i)] for i in ids))


TOKENIZERS = {"byte": _byte_tokenizer, "gpt2": _gpt2_tokenizer}


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called ``name`` (``gpt2`` or ``byte``)."""
    if name not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {name!r}; choose one of {sorted(TOKENIZERS)}.")
    return TOKENIZERS[name]()


def tokenizer_from_spec(spec: dict) -> Tokenizer:
    """The tokenizer a spec describes (``{"name": "gpt2" | "byte"}`` or ``{"name": "char", "chars": [...]}``)."""
    if spec.get("name") == "char":
        return char_tokenizer(list(spec["chars"]))
    return get_tokenizer(str(spec.get("name")))
