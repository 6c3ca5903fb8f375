"""Atomic save and safe load of the whole training state.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over
the old one (``os.replace`` is atomic on POSIX): a crash at any moment leaves either the previous
checkpoint or the new one, never a torn file. Loading uses ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

CHECKPOINT_NAME = "ckpt.pt"
FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a damaged file raises ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}: nothing to resume. Drop train.resume=true to start a new run.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ConfigError(
            f"the checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"it is truncated or not a sophia_train checkpoint. It was left untouched."
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not a sophia_train checkpoint (format {FORMAT_VERSION}); it was left untouched.")
    return state
