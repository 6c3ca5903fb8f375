"""Checkpoint integrity: checksums stored at save and verified at load, and the layout a resume needs.

A one-file checkpoint is a zip archive (``torch.save``) whose every record carries the CRC-32 of its
bytes, computed as it was written; ``torch.load`` does not look at them, so a flipped byte in a tensor
loads silently. ``verify_zip_checksums`` reads the archive once with Python's own zip reader and
compares every record with its CRC. A sharded (DCP) checkpoint keeps the CRC-32 of every file of every
rank in its ``meta.pt`` (``shard_checksums`` at save, ``verify_shards`` at load). ``check_layout`` and
``check_optimizer_shapes`` turn a checkpoint that lacks what a resume needs, or whose tensors do not fit,
into one paragraph instead of a traceback from deep inside ``load_state_dict`` or the first step.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from sophia_train.errors import ConfigError

#: Optimizer state entries that hold one value per parameter element: their shape must be the parameter's.
ELEMENTWISE_STATE = ("m", "v", "h", "s", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg",
                     "acc_delta", "sum", "exp_inf", "exp_hessian_diag_sq", "grad_avg", "ax", "eta", "prev", "mu_product")


LEFT_UNTOUCHED = ("It was left untouched: resume from a good copy of it (or of the run folder), or start a new run "
                  "(train.overwrite=true replaces it).")


def file_crc32(path: str | os.PathLike, chunk: int = 1 << 24) -> int:
    """CRC-32 of a file's bytes, read in chunks."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def verify_zip_checksums(path: Path) -> None:
    """Read every record of a ``torch.save`` archive and compare it with the CRC-32 stored at save time."""
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(f"the checkpoint {path} is empty (0 bytes): it was cut off before its first byte, or the disk "
                          f"lost it. {LEFT_UNTOUCHED}")
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            if all(r.CRC == 0 for r in records if r.file_size):  # written with torch's CRC-32 turned off: nothing to check
                return
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ConfigError(f"the checkpoint {path} ({size:,} bytes) cannot be read as a whole checkpoint file ({type(e).__name__}: {e}): "
                          f"it is truncated, damaged or not a sophia_train checkpoint. {LEFT_UNTOUCHED}") from None
    if bad is not None:
        raise ConfigError(
            f"the checkpoint {path} is damaged: its record {bad} no longer matches the checksum stored when it was saved "
            f"(a disk or copy error, or an edit). Loading it would resume from corrupted weights or optimizer state. "
            f"{LEFT_UNTOUCHED}"
        )


def check_layout(state: dict[str, Any], path: Path, tensors: bool = True) -> None:
    """Refuse a checkpoint without what a resume reads: its step, config and (``tensors``) weights and optimizer state."""
    problems = []
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        problems.append(f"its step is {step!r}, not a count of steps")
    if not isinstance(state.get("config"), dict):
        problems.append("it has no run config")
    if tensors:
        if not isinstance(state.get("model"), dict) or not state.get("model"):
            problems.append("it has no model weights")
        opt = state.get("optimizer")
        if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)):
            problems.append("it has no optimizer state")
    if problems:
        raise ConfigError(f"the checkpoint {path} cannot be resumed: {'; '.join(problems)}. It was not written whole by "
                          f"sophia_train, or was altered since. {LEFT_UNTOUCHED}")


def check_optimizer_shapes(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Refuse restored optimizer state whose per-element tensors do not have their parameter's shape."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if key in ELEMENTWISE_STATE and torch.is_tensor(value) and value.numel() > 1 and value.shape != p.shape:
                    raise ConfigError(
                        f"the checkpoint {path} holds optimizer state {key!r} of shape {list(value.shape)} for a parameter "
                        f"of shape {list(p.shape)}: it does not belong to this model and optimizer. {LEFT_UNTOUCHED}"
                    )


def load_error(e: BaseException, path: Path, what: str) -> ConfigError:
    """A ``load_state_dict`` failure (missing or unexpected keys, a size mismatch) as one paragraph."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("Error(s) in loading")]
    detail = " ".join(lines) or type(e).__name__
    return ConfigError(f"the checkpoint {path} does not fit this run's {what} ({detail[:300]}). {LEFT_UNTOUCHED}")


def shard_checksums(folder: Path, rank: int) -> dict[str, int]:
    """CRC-32 of the files this rank wrote into a DCP folder (``__<rank>_*``), and rank 0 of ``.metadata``."""
    names = sorted(p.name for p in folder.glob(f"__{rank}_*"))
    if rank == 0 and (folder / ".metadata").is_file():
        names.append(".metadata")
    return {name: file_crc32(folder / name) for name in names}


def verify_shards(folder: Path, expected: dict[str, int] | None, rank: int = 0, world: int = 1) -> list[str]:
    """The files of a DCP folder (this rank's share of them) whose CRC-32 differs from ``expected`` or that
    are missing; [] when all match or the checkpoint predates the checksums (``expected`` None)."""
    if not expected:
        return []
    names = sorted(expected)[rank::world]
    return [n for n in names if not (folder / n).is_file() or file_crc32(folder / n) != expected[n]]


def damaged_shards_message(folder: Path, bad: list[str]) -> str:
    """One paragraph for a sharded checkpoint whose files fail their checksums."""
    return (f"the sharded checkpoint {folder} is damaged: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} no longer "
            f"match the checksums stored when it was saved (a disk or copy error, or an edit). {LEFT_UNTOUCHED}")
