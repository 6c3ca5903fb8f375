"""Checkpoint files: atomic save and safe load, and which checkpoint a path or run folder names.

A checkpoint is written to a temporary file of its own name in the same folder, flushed to disk, then
renamed over the old one (``os.replace`` is atomic on POSIX): a crash at any moment leaves either the
previous checkpoint or the new one, never a torn file; a failed write (disk full) removes its temp file
and leaves the previous checkpoint as it was. Loading uses ``weights_only=True`` and verifies every
record's CRC-32. A sharded (FSDP) checkpoint is a ``ckpt.dcp`` folder (``sharded.py``) that the same
loaders read whole.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from sophia_train.atomic import atomic_write
from sophia_train.checkpoint import sharded
from sophia_train.checkpoint.integrity import verify_zip_checksums
from sophia_train.errors import ConfigError
from sophia_train.model import GPTConfig

CHECKPOINT_NAME = "ckpt.pt"
BEST_NAME = "best.pt"  # train.keep_best: the checkpoint with the lowest val loss
LOCK_NAME = "run.lock"
FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (``atomic_write``), every record with its CRC-32 (verified at load)."""
    torch.serialization.set_crc32_options(True)  # torch's default; the integrity check relies on it
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a damaged file raises ``ConfigError``. A sharded
    checkpoint folder (``RUN/ckpt.dcp``, FSDP runs) is read whole into the same one-file layout. With
    ``mmap`` a one-file checkpoint's tensors are mapped, not read, until used."""
    path = checkpoint_at(path) if Path(path).is_dir() else Path(path)
    if path.is_dir() and (sharded.exists(path) or (path / sharded.META).is_file()):
        state = sharded.to_single_file(sharded.latest(path) or path)
        return state if str(map_location) == "cpu" else _to_device(state, map_location)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}: nothing to resume. Drop train.resume=true to start a new run.")
    if not mmap:  # a full read checks every record against its stored CRC-32 (a mapped read is for metadata only)
        verify_zip_checksums(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConfigError(
            f"the checkpoint {path} cannot be read ({type(e).__name__}: {first[:200]}); "
            f"it is truncated or not a sophia_train checkpoint. It was left untouched."
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not a sophia_train checkpoint (format {FORMAT_VERSION}); it was left untouched.")
    return state


def load_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's entries besides the weights and the optimizer state (shape, config, tokenizer, step),
    without reading its tensors: a sharded checkpoint's ``meta.pt``, a one-file checkpoint mapped."""
    path = checkpoint_at(path) if Path(path).is_dir() else Path(path)
    if path.is_dir() and (sharded.exists(path) or (path / sharded.META).is_file()):
        return sharded.load_meta(sharded.latest(path) or path)
    state = load_checkpoint(path, mmap=True)
    return {k: v for k, v in state.items() if k not in ("model", "optimizer")}


def _to_device(obj: Any, device: str | torch.device) -> Any:
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


def run_checkpoint(folder: str | os.PathLike) -> Path:
    """The checkpoint a run folder holds: ``ckpt.pt`` (one file), else ``ckpt.dcp`` when it holds a
    sharded one; when both are there (a crash right after a run switched ``train.parallel``), the newer."""
    folder = Path(folder)
    single, dcp = folder / CHECKPOINT_NAME, folder / sharded.SHARDED_NAME
    newest = sharded.latest(dcp)
    if newest is None:
        return single
    if single.is_file() and single.stat().st_mtime > (newest / sharded.META).stat().st_mtime:
        return single
    return dcp


def checkpoint_at(run: str | os.PathLike) -> Path:
    """The checkpoint a path names: a file or a sharded ``ckpt.dcp`` folder as given, a run folder's own
    (``run_checkpoint``) otherwise. It may not exist."""
    path = Path(run).expanduser()
    if path.is_file() or (path / sharded.LATEST).is_file() or (path / sharded.META).is_file():
        return path
    return run_checkpoint(path) if path.is_dir() else path



def saved_model_config(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's model shape, with fields added to ``GPTConfig`` since it was written at their defaults."""
    return {**dataclasses.asdict(GPTConfig()), **state.get("model_config", {})}

