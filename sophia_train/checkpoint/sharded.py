"""Sharded checkpoints of FSDP runs with ``torch.distributed.checkpoint`` (DCP).

Layout: ``RUN/ckpt.dcp/`` holds one complete checkpoint folder per save, ``step-00000120-<id>/``
(every rank's ``__<rank>_0.distcp`` shard, DCP's ``.metadata`` and our ``meta.pt`` with everything
that is not a tensor: step, config, RNG, clock), and ``LATEST``, a one-line file naming the folder to
load. Atomic at the folder level: a save writes into ``<name>.tmp`` and, once every rank's shard and the
metadata are on disk, rank 0 renames it and then replaces ``LATEST`` (``os.replace``, atomic on POSIX);
older folders go last. A crash at any point leaves ``LATEST`` naming a complete checkpoint (or no
``LATEST`` before the first save); the next start deletes leftovers (``remove_stale``).

DCP reshards on load, so a run saved by N processes resumes on any other number, and
``to_single_file`` turns a folder into the ``ckpt.pt`` layout (optimizer state keyed by parameter
index) that sampling, the HF export, ``init_from`` and a DDP resume read.

torch.distributed.checkpoint is imported where it is used: it pulls in DTensor (about 1.5 s of
startup), which a run without FSDP never needs.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from sophia_train.atomic import atomic_write, disk_is_full
from sophia_train.checkpoint.integrity import damaged_shards_message, shard_checksums, verify_shards
from sophia_train.errors import ConfigError

SHARDED_NAME = "ckpt.dcp"
BEST_SHARDED_NAME = "best.dcp"
LATEST = "LATEST"
META = "meta.pt"


def latest(root: str | os.PathLike) -> Path | None:
    """The complete checkpoint folder ``root/LATEST`` names, or None when there is none."""
    root = Path(root)
    try:
        name = (root / LATEST).read_text().strip()
    except OSError:
        return None
    folder = root / name
    return folder if name and (folder / META).is_file() and (folder / ".metadata").is_file() else None


def exists(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a loadable sharded checkpoint."""
    return latest(root) is not None


def remove_stale(root: str | os.PathLike) -> list[Path]:
    """Delete what killed saves left in ``root``: unfinished ``*.tmp`` folders, folders ``LATEST`` does
    not name, and temp files of ``LATEST`` itself (call while holding the run folder's lock)."""
    root = Path(root)
    if not root.is_dir():
        return []
    keep = latest(root)
    stale = [p for p in root.iterdir() if (p.is_dir() and p != keep) or p.name.startswith(f"{LATEST}.tmp")]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def _state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}


def save(root: str | os.PathLike, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any],
         is_main: bool) -> Path:
    """Write every rank's shard of model and optimizer plus ``meta`` (rank 0) as a new complete folder
    under ``root`` and point ``LATEST`` at it; collective (every rank calls it). Returns the folder."""
    import torch.distributed.checkpoint as dcp

    root = Path(root)
    name = [f"step-{step:08d}-{uuid.uuid4().hex[:8]}" if is_main else None]
    if dist.is_initialized():
        dist.broadcast_object_list(name, src=0)
    final = root / name[0]
    tmp = root / f"{name[0]}.tmp"
    if is_main:
        tmp.mkdir(parents=True)
    if dist.is_initialized():
        dist.barrier()
    try:
        dcp.save(_state_dicts(model, optimizer), checkpoint_id=tmp)  # returns once every shard and .metadata are written
    except BaseException as e:
        error = _as_os_error(e, root)  # before the unfinished folder frees its space
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise error from None
    sums = [shard_checksums(tmp, dist.get_rank() if dist.is_initialized() else 0)]  # each rank: the files it wrote
    if dist.is_initialized():
        everyone: list[dict[str, int] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, sums[0])
        sums = everyone
    if is_main:
        meta = {**meta, "shard_crc32": {k: v for part in sums for k, v in (part or {}).items()}}
        atomic_write(tmp / META, lambda f: torch.save(meta, f))  # DCP's writer fsynced every shard (sync_files)
        os.rename(tmp, final)
        atomic_write(root / LATEST, lambda f: f.write(f"{final.name}\n".encode()))  # its folder fsync covers the rename too
        for old in root.iterdir():
            if old.is_dir() and old != final:
                shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return final


def _as_os_error(e: BaseException, folder: Path | None = None) -> BaseException:
    """DCP reports a rank's failed write as a ``CheckpointException`` wrapping it: hand back the first
    ``OSError`` inside (disk full, permissions), so the trainer can say what happened in one paragraph."""
    from torch.distributed.checkpoint.api import CheckpointException

    if isinstance(e, CheckpointException):
        for failure in e.failures.values():
            inner = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(inner, OSError):
                return OSError(inner.errno, inner.strerror or str(inner))
    if not isinstance(e, OSError) and folder is not None and disk_is_full(folder):  # torch's writers say RuntimeError
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
    return e


def load_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """``meta.pt`` of one checkpoint folder (weights_only); a damaged one raises ``ConfigError``."""
    path = Path(folder) / META
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"the sharded checkpoint {folder} cannot be read ({type(e).__name__}: {str(e)[:200]}); it was left untouched.") from None


def restore(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a sharded checkpoint into ``model`` and ``optimizer`` (FSDP or plain; any process count:
    DCP reads each rank's part of every tensor)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    folder = Path(folder)
    expected = load_meta(folder).get("shard_crc32")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    bad = [verify_shards(folder, expected, rank, world)]  # each rank checks a share of the files
    if dist.is_initialized():
        everyone: list[list[str] | None] = [None] * world
        dist.all_gather_object(everyone, bad[0])
        bad = everyone
    damaged = sorted(n for part in bad for n in (part or []))
    if damaged:
        raise ConfigError(damaged_shards_message(folder, damaged))
    sd = _state_dicts(model, optimizer)
    dcp.load(sd, checkpoint_id=folder)
    set_model_state_dict(model, sd["model"])
    set_optimizer_state_dict(model, optimizer, sd["optim"])


def _read_all(folder: Path) -> dict[str, Any]:
    """Every tensor and value of a DCP folder as whole tensors, in one process."""
    import warnings

    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*single process.*")
        return _load_state_dict_from_keys(checkpoint_id=folder)


def optimizer_by_index(osd: dict[str, Any]) -> dict[str, Any]:
    """A parameter-name-keyed optimizer state dict (DCP's) in ``torch.optim``'s layout, keyed by the
    parameter's position across the param groups."""
    index: dict[str, int] = {}
    groups = []
    for g in osd["param_groups"]:
        ids = []
        for fqn in g["params"]:
            index.setdefault(fqn, len(index))
            ids.append(index[fqn])
        groups.append({**g, "params": ids})
    return {"state": {index[k]: v for k, v in osd.get("state", {}).items() if k in index}, "param_groups": groups}  # DCP drops an empty state


def optimizer_by_name(osd: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of ``optimizer_by_index``: ``names[i]`` is the name of parameter ``i``."""
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in osd["param_groups"]]
    return {"state": {names[int(i)]: v for i, v in osd["state"].items()}, "param_groups": groups}


def to_single_file(folder: str | os.PathLike) -> dict[str, Any]:
    """A sharded checkpoint folder as the one-file checkpoint dict (``checkpoint.training_state`` layout)."""
    folder = Path(folder)
    meta = load_meta(folder)
    damaged = verify_shards(folder, meta.get("shard_crc32"))
    if damaged:
        raise ConfigError(damaged_shards_message(folder, damaged))
    data = _read_all(folder)
    return {**meta, "model": dict(data["model"]), "optimizer": optimizer_by_index(data["optim"])}


def restore_from_single_file(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a one-file checkpoint's weights and optimizer state into an FSDP ``model``/``optimizer``
    (each rank keeps its shards)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state["model"], options=full)
    set_optimizer_state_dict(model, optimizer, optimizer_by_name(state["optimizer"], order), options=full)
