"""Token datasets on disk (``train.bin``/``val.bin`` memmaps + ``meta.json``) and batch sampling.

Every batch is a pure function of ``(seed, split, step, global micro-batch index)``: a resumed run
continues the same data stream without saving any sampler state, and a run on N processes with
accumulation A/N sees exactly the batches of one process with accumulation A.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sophia_train.atomic import atomic_write, atomic_write_text
from sophia_train.errors import ConfigError
from sophia_train.hints import script_command

META_FILE = "meta.json"
SPLITS = ("train", "val")
_STREAM = {"train": 0, "val": 1}


@dataclass
class TokenDataset:
    """A prepared dataset folder, checked for presence and consistency on open."""

    dir: Path
    vocab_size: int
    tokenizer: str
    dtype: np.dtype
    num_tokens: dict[str, int]
    tokenizer_spec: dict  # what ``tokenizer.tokenizer_from_spec`` needs; checkpoints keep it

    def identity(self) -> dict:
        """What makes this dataset this dataset, wherever its folder is (checkpoints keep it; a resume
        compares it): tokenizer, vocabulary, token counts, a hash of meta.json and of each split's first
        and last MB."""
        meta = self.dir / META_FILE
        return {
            "tokenizer": self.tokenizer, "vocab_size": self.vocab_size, "num_tokens": dict(self.num_tokens),
            "meta_sha256": hashlib.sha256(meta.read_bytes()).hexdigest() if meta.is_file() else None,
            "bins_sha256": {split: _ends_sha256(self.dir / f"{split}.bin") for split in SPLITS},
        }

    def tokens(self, split: str) -> np.memmap:
        """Read-only memmap of one split (re-opened per call: long-lived memmaps grow RSS)."""
        return np.memmap(self.dir / f"{split}.bin", dtype=self.dtype, mode="r")


def _ends_sha256(path: Path, span: int = 1 << 20) -> str:
    """sha256 of a file's first and last ``span`` bytes (the whole file when it is shorter than 2 spans)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        h.update(f.read(span))
        if size > span:
            f.seek(max(span, size - span))
            h.update(f.read(span))
    h.update(str(size).encode())
    return h.hexdigest()


def dataset_differences(saved: dict, now: dict) -> list[str]:
    """What differs between two ``TokenDataset.identity`` records, in words (empty: the same data)."""
    names = {"tokenizer": "tokenizer", "vocab_size": "vocabulary", "num_tokens": "token counts",
             "meta_sha256": "meta.json", "bins_sha256": "the .bin files' contents"}
    return [f"{label}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" if k in ("tokenizer", "vocab_size", "num_tokens")
            else f"{label} differ" for k, label in names.items() if k in saved and saved.get(k) != now.get(k)]


def open_dataset(path: str | os.PathLike, name: str = "", prepare_hint: str = "") -> TokenDataset:
    """Open and validate a prepared dataset; raise ``ConfigError`` saying how to prepare it if absent.

    Besides this project's folders (``meta.json``), a nanoGPT-prepared folder is accepted as it is:
    ``train.bin``/``val.bin`` of uint16 with nanoGPT's ``meta.pkl`` (a character vocabulary), or with no
    metadata at all (nanoGPT's GPT-2 BPE datasets)."""
    d = Path(path)
    label = f"dataset {name!r}" if name else "dataset"
    hint = prepare_hint or script_command("prepare_data.py", name or "<name>")
    meta = _read_meta(d, label, hint)
    try:
        vocab_size = int(meta["vocab_size"])
        dtype = np.dtype(meta.get("dtype", "uint16"))
        tokenizer = str(meta.get("tokenizer", "unknown"))
        expected = {s: int(meta["num_tokens"][s]) for s in SPLITS}
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{label}: {d / META_FILE} is corrupt ({type(e).__name__}: {e}); prepare the dataset again with `{hint}`.") from None
    if dtype.kind != "u":  # signed ids can be negative and float ids are not ids: both train on garbage
        raise ConfigError(f"{label}: {d / META_FILE} says the tokens are {dtype.name}, but token ids are stored as unsigned "
                          f"integers (uint16 for vocabularies up to 65,536, uint32 above). Prepare the dataset again with `{hint}`.")
    if vocab_size < 1 or vocab_size - 1 > np.iinfo(dtype).max:
        raise ConfigError(f"{label}: {d / META_FILE} promises a vocabulary of {vocab_size}, which {dtype.name} tokens cannot "
                          f"hold. Prepare the dataset again with `{hint}`.")
    spec = {"name": tokenizer, **({"chars": meta["chars"]} if "chars" in meta else {})}
    for split in SPLITS:
        size = (d / f"{split}.bin").stat().st_size
        if size % dtype.itemsize or size // dtype.itemsize != expected[split]:
            raise ConfigError(
                f"{label}: {d / f'{split}.bin'} holds {size} bytes, but meta.json promises {expected[split]} "
                f"{dtype.name} tokens ({expected[split] * dtype.itemsize} bytes): the file is truncated or corrupt. "
                f"Prepare it again with `{hint}`."
            )
    ds = TokenDataset(dir=d, vocab_size=vocab_size, tokenizer=tokenizer, dtype=dtype, num_tokens=expected, tokenizer_spec=spec)
    _check_token_ids(ds, meta, label, hint)
    return ds


def _read_meta(d: Path, label: str, hint: str) -> dict:
    """The folder's metadata: its meta.json, or one made up for a nanoGPT folder (meta.pkl, or none at all)."""
    if all((d / f"{s}.bin").is_file() for s in SPLITS) and not (d / META_FILE).is_file():
        return nanogpt_meta(d, label)
    missing = [f for f in (META_FILE, "train.bin", "val.bin") if not (d / f).is_file()]
    if missing:
        raise ConfigError(
            f"{label} is not prepared: {', '.join(str(d / f) for f in missing)} not found. "
            f"Prepare it with `{hint}`, or point data.dir (or SOPHIA_DATA_DIR) at a prepared folder."
        )
    try:
        return json.loads((d / META_FILE).read_text())
    except ValueError as e:
        raise ConfigError(f"{label}: {d / META_FILE} is corrupt ({e}); prepare the dataset again with `{hint}`.") from None


def _check_token_ids(ds: TokenDataset, meta: dict, label: str, hint: str) -> None:
    """Refuse token ids outside the vocabulary, above the recorded max_token_id, or byte-level data read as GPT-2 BPE."""
    recorded = meta.get("max_token_id")
    for split in SPLITS:
        # the whole file when meta.json does not record its largest id (or the file is small), else the head
        whole = recorded is None or ds.num_tokens[split] <= FULL_SCAN_TOKENS
        top = max_token_id(ds.tokens(split), None if whole else 1 << 20)
        if whole and recorded is not None and top > int(recorded):
            raise ConfigError(f"{label}: {split}.bin holds token id {top}, above the max_token_id {recorded} that meta.json "
                              f"recorded when it was prepared: the file changed since. Prepare it again with `{hint}`.")
        top = max(top, int(recorded) if recorded is not None else -1)
        if meta.get("_assumed_gpt2") and 0 <= top < 256:
            raise ConfigError(
                f"{label}: {ds.dir} has train.bin and val.bin but no meta.json (nor nanoGPT's meta.pkl), which is read as "
                f"nanoGPT's GPT-2 BPE data, yet {split}.bin holds no id above {top}: that looks like byte-level (or "
                f"character) data, which would train with the wrong 50,304-token vocabulary. Write the folder with "
                f"`{hint}` (it writes meta.json), or add a meta.json naming its tokenizer and vocabulary."
            )
        if top >= ds.vocab_size:
            raise ConfigError(
                f"{label}: {split}.bin holds token id {top}, outside the vocabulary of {ds.vocab_size} "
                f"in meta.json: the file is corrupt or belongs to another tokenizer. Prepare it again with `{hint}`."
            )


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only (dicts, lists, numbers, strings): a ``meta.pkl`` cannot run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def nanogpt_meta(d: Path, label: str) -> dict:
    """The ``meta.json`` equivalent of a nanoGPT data folder: uint16 tokens, ``meta.pkl``'s characters or GPT-2 BPE."""
    num_tokens = {}
    for split in SPLITS:
        size = (d / f"{split}.bin").stat().st_size
        if size % 2:
            raise ConfigError(f"{label}: {d / f'{split}.bin'} has an odd number of bytes ({size}); nanoGPT writes uint16 tokens.")
        num_tokens[split] = size // 2
    meta = {"dtype": "uint16", "num_tokens": num_tokens, "source": f"nanoGPT folder {d}"}
    pkl = d / "meta.pkl"
    if not pkl.is_file():  # nanoGPT's openwebtext / shakespeare: GPT-2 BPE, no metadata
        return {**meta, "vocab_size": 50257, "tokenizer": "gpt2", "_assumed_gpt2": True}
    try:
        with open(pkl, "rb") as f:
            info = _PlainDataUnpickler(f).load()
        itos = info["itos"]
        chars = [itos[i] for i in range(int(info["vocab_size"]))]
    except Exception as e:
        raise ConfigError(f"{label}: {pkl} is not a nanoGPT meta.pkl with 'vocab_size' and 'itos' ({type(e).__name__}: {e}).") from None
    return {**meta, "vocab_size": len(chars), "tokenizer": "char", "chars": chars}


FULL_SCAN_TOKENS = 1 << 28  # files up to this size (512 MB of uint16) are scanned whole at every open (< 1 s)


def max_token_id(tokens: np.ndarray, limit: int | None = None, chunk: int = 1 << 24) -> int:
    """The largest id among the first ``limit`` tokens (all when None), read in chunks; -1 when empty."""
    n = len(tokens) if limit is None else min(limit, len(tokens))
    top = -1
    for start in range(0, n, chunk):
        top = max(top, int(np.asarray(tokens[start : min(n, start + chunk)]).max()))
    return top


def check_fits(ds: TokenDataset, seq_len: int) -> None:
    """Refuse a dataset split too short to draw one sequence of ``seq_len + 1`` tokens."""
    for split in SPLITS:
        if ds.num_tokens[split] < seq_len + 2:
            raise ConfigError(
                f"the {split} split of {ds.dir} has {ds.num_tokens[split]} tokens, too few for sequences of "
                f"{seq_len} tokens; lower train.seq_len or prepare more data."
            )


def write_split(path: Path, ids: np.ndarray) -> None:
    """Write one split's tokens atomically (temp file + rename)."""
    atomic_write(path, ids.tofile)


def write_meta(d: Path, vocab_size: int, tokenizer: str, num_tokens: dict[str, int], source: str,
               max_token_id: int | None = None, **extra) -> None:
    """Write ``meta.json`` describing a prepared dataset (written last: its presence marks completion).
    ``max_token_id`` (the largest id in either split) lets ``open_dataset`` check ids without a scan."""
    meta = {
        "vocab_size": vocab_size,
        "tokenizer": tokenizer,
        "dtype": "uint16" if vocab_size <= 65536 else "uint32",
        "num_tokens": num_tokens,
        "source": source,
        **({"max_token_id": int(max_token_id)} if max_token_id is not None else {}),
        **extra,
    }
    atomic_write_text(d / META_FILE, json.dumps(meta, indent=2) + "\n")


class BatchSampler:
    """Draws ``(x, y)`` micro-batches of random windows, deterministically from the step and index."""

    def __init__(self, ds: TokenDataset, seq_len: int, batch_size: int, seed: int, device: torch.device):
        check_fits(ds, seq_len)
        self.ds, self.seq_len, self.batch_size, self.seed, self.device = ds, seq_len, batch_size, seed, device

    def offsets(self, split: str, step: int, index: int) -> np.ndarray:
        """Start offsets of the windows of micro-batch ``index`` at ``step``."""
        rng = np.random.default_rng([self.seed, _STREAM[split], step, index])
        return rng.integers(0, self.ds.num_tokens[split] - self.seq_len - 1, size=self.batch_size)

    def get(self, split: str, step: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, ``(batch_size, seq_len)`` int64 on the sampler's device."""
        data = self.ds.tokens(split)
        ix = self.offsets(split, step, index)
        window = np.stack([np.asarray(data[i : i + self.seq_len + 1], dtype=np.int64) for i in ix])
        xy = torch.from_numpy(window)
        x, y = xy[:, :-1], xy[:, 1:]
        if self.device.type == "cuda":
            return (
                x.contiguous().pin_memory().to(self.device, non_blocking=True),
                y.contiguous().pin_memory().to(self.device, non_blocking=True),
            )
        return x.contiguous(), y.contiguous()
