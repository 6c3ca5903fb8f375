"""The run folder's safety: exclusive ownership, atomic save and safe load, and resume vetting.

A checkpoint is written to a temporary file of its own name in the same folder, flushed to disk, then
renamed over the old one (``os.replace`` is atomic on POSIX): a crash at any moment leaves either the
previous checkpoint or the new one, never a torn file; a failed write (disk full) removes its temp file
and leaves the previous checkpoint as it was. Loading uses ``weights_only=True``.

One run per folder: ``RunFolderLock`` holds an OS lock (``fcntl.flock``) on ``run.lock`` for the whole
run. The OS drops it when the process dies, so a SIGKILLed run never blocks its own resume.

Resuming is the same run: ``config_changes`` lists what differs from the checkpoint's config among the
settings that define a run (model, data, optimizer hyperparameters, batch and sequence layout, seed,
schedule); the trainer refuses them unless named in ``train.resume_allow``.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from sophia_train import sharded_checkpoint as sharded
from sophia_train.atomic import atomic_write, file_in_the_way, fsync_dir, remove_stale_temp_files  # noqa: F401  (re-exported)
from sophia_train.config import Config, flatten
from sophia_train.data import dataset_differences
from sophia_train.errors import ConfigError
from sophia_train.integrity import check_layout, check_optimizer_shapes, load_error, verify_zip_checksums
from sophia_train.parallel import is_sharded, local
from sophia_train.resume_changes import refuse_fixed_fields

CHECKPOINT_NAME = "ckpt.pt"
BEST_NAME = "best.pt"  # train.keep_best: the checkpoint with the lowest val loss
LOCK_NAME = "run.lock"
FORMAT_VERSION = 1

#: Settings that may change when a run is resumed: where and how it runs, what it reports, never what it computes.
RESUME_FREE_KEYS = (
    "run_name", "data.dir", "optim.fused", "optim.foreach", "logger.",
    "train.out_dir", "train.resume", "train.overwrite", "train.resume_allow", "train.stop_after_step",
    "train.eval_interval", "train.eval_iters", "train.log_interval", "train.ckpt_interval", "train.device",
    "train.dtype", "train.compile", "train.threads", "train.plot", "train.log_update_stats",
    "train.skip_nonfinite", "train.max_skips_in_row", "train.eval_only", "train.keep_best", "train.parallel",
)


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


def prepare_out_dir(folder: str | os.PathLike) -> Path:
    """Create the run folder, or say in one paragraph why it cannot be (a file in the way, no permission)."""
    folder = Path(folder)
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise ConfigError(
            f"train.out_dir={folder} cannot be a run folder: {blocker} is a file, not a folder. Choose another "
            f"train.out_dir (or run_name); nothing was written."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the run folder train.out_dir={folder}: {e.strerror}. Choose a writable train.out_dir.") from None
    return folder


class RunFolderLock:
    """Exclusive ownership of a run folder for as long as the run lives (an OS file lock)."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunFolderLock":
        """Take the lock or raise ``ConfigError`` naming the process that holds it; also proves the folder writable."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(
                f"the run folder {self.path.parent} is not writable ({e.strerror}); choose another train.out_dir. "
                f"Nothing was trained or written."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"the run folder {self.path.parent} is in use by another run (PID {holder}); two runs in one folder "
                f"would overwrite each other's checkpoint and metrics. Wait for it, stop it, or choose another "
                f"train.out_dir; nothing was written."
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            why = "the disk is full" if e.errno == errno.ENOSPC else e.strerror
            raise ConfigError(f"cannot write into the run folder {self.path.parent}: {why}. Free space or choose another train.out_dir.") from None
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the OS also drops it when the process ends)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.release()
        except (AttributeError, TypeError, OSError):  # at interpreter exit module globals may already be gone;
            pass  # the OS drops the lock with the process anyway


def _free(key: str) -> bool:
    return any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUME_FREE_KEYS)


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (checkpoint value, current value)}`` for the run-defining settings that differ.
    Keys the checkpoint does not know (added to the project since) are not compared."""
    a, b = flatten(saved), flatten(now)
    return {k: (a[k], b.get(k)) for k in sorted(a) if not _free(k) and k in b and _norm(a[k]) != _norm(b[k])}


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def known_config_keys(now: dict[str, Any]) -> set[str]:
    """Every dotted key of a config (for checking ``train.resume_allow``)."""
    return set(flatten(now))


def vet_resume_config(cfg: Config, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The run-defining settings that differ from the checkpoint's config; refuse any not in ``train.resume_allow``."""
    now = OmegaConf.to_container(OmegaConf.structured(cfg))
    allow = set(cfg.train.resume_allow)  # its names were checked by open_run_folder (check_resume_allow)
    changes = config_changes(saved, now)
    refused = {k: v for k, v in changes.items() if not _allowed(k, allow)}
    if refused:
        diff = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in refused.items())
        raise ConfigError(
            f"train.resume=true continues the run in {cfg.train.out_dir}, but settings that define the run differ from its "
            f"checkpoint ({diff}). Put them back, start a new run in another train.out_dir, or accept them with "
            f"train.resume_allow=[{','.join(refused)}]; a changed optim.lr, train.warmup_steps, train.max_steps or "
            f"train.min_lr_ratio takes effect from the resumed step on the new schedule (the LR is a function of the "
            f"step and those four: a larger max_steps re-stretches the cosine, so the LR jumps up). The checkpoint "
            f"was left untouched."
        )
    refuse_fixed_fields(changes)
    return changes


def check_resume_allow(cfg: Config) -> None:
    """Refuse ``train.resume_allow`` entries that name no config key (on every run, not only on a resume)."""
    known = known_config_keys(OmegaConf.to_container(OmegaConf.structured(cfg)))
    unknown = sorted(a for a in cfg.train.resume_allow if a not in known and not any(k.startswith(f"{a}.") for k in known))
    if unknown:
        raise ConfigError(f"train.resume_allow names {', '.join(unknown)}, which are not config keys (e.g. optim.lr, train.max_steps).")


def _allowed(key: str, allow: set[str]) -> bool:
    """Whether ``train.resume_allow`` covers ``key``: named itself, or a table above it (``optim.kwargs``)."""
    return key in allow or any(key.startswith(f"{a}.") for a in allow)


def check_same_model(state: dict[str, Any], model_config: dict[str, Any], path: Path, advice: str) -> None:
    """Refuse a checkpoint (``state``, read from ``path``) of another model shape, naming what differs."""
    saved = saved_model_config(state)
    if saved != model_config:
        diff = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}" for k, v in model_config.items() if saved.get(k) != v)
        raise ConfigError(f"the checkpoint {path} belongs to another model ({state.get('model_name')}; {diff}). {advice}")


def check_same_dataset(cfg: Config, state: dict[str, Any], dataset: dict[str, Any] | None, path: Path) -> None:
    """Refuse to resume on another corpus than the checkpoint's (``TokenDataset.identity``), unless
    ``train.resume_allow`` names ``data``; the same data in another folder is the same dataset."""
    saved = state.get("dataset")
    if saved is None or dataset is None or "data" in cfg.train.resume_allow:
        return  # a checkpoint from before the identity was recorded: nothing to compare
    diff = dataset_differences(saved, dataset)
    if diff:
        raise ConfigError(
            f"the checkpoint {path} was trained on other data than data.dir={cfg.data.dir} holds ({'; '.join(diff)}). "
            f"Point data.dir at the dataset it was trained on (the same files in another folder are fine), or continue "
            f"on this data with train.resume_allow=[data]. The checkpoint was left untouched."
        )


def checkpoint_to_resume(cfg: Config, model_config: dict[str, Any], path: Path,
                         dataset: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Refuse to overwrite an earlier run's checkpoint; load and vet the one to resume (same model and optimizer)."""
    t = cfg.train
    if not t.resume:
        if (path.exists() or sharded.exists(path.with_name(sharded.SHARDED_NAME))) and not t.overwrite:
            raise ConfigError(
                f"{run_checkpoint(path.parent)} already holds a checkpoint of an earlier run. Continue it with train.resume=true, replace it "
                f"with train.overwrite=true, or choose another run_name / train.out_dir; it was left untouched."
            )
        return None
    state = load_resume_state(path.parent)
    check_same_model(state, model_config, path, "Resume it with the model it was trained with, or start a new run in "
                                                "another train.out_dir; the checkpoint was left untouched.")
    if state.get("optim_name") != cfg.optim.name:
        raise ConfigError(
            f"the checkpoint {path} was trained with optim={state.get('optim_name')}, not optim={cfg.optim.name}: its "
            f"optimizer state cannot be reused. It was left untouched."
        )
    check_same_dataset(cfg, state, dataset, path)
    return state


def load_resume_state(folder: Path) -> dict[str, Any]:
    """What resuming a run folder needs before the model exists: the one-file checkpoint, or a sharded
    checkpoint's ``meta.pt`` plus ``sharded_folder`` (its tensors are read straight into the shards)."""
    path = run_checkpoint(folder)
    if path.name == sharded.SHARDED_NAME:
        newest = sharded.latest(path)
        meta = sharded.load_meta(newest)
        check_layout(meta, newest, tensors=False)
        return {**meta, "sharded_folder": str(newest)}
    state = load_checkpoint(path)
    check_layout(state, path)
    return state


def saved_model_config(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's model shape, with fields added to ``GPTConfig`` since it was written at their defaults."""
    from sophia_train.model import GPTConfig

    return {**dataclasses.asdict(GPTConfig()), **state.get("model_config", {})}


@dataclass
class RunFolder:
    """A vetted run folder: owned by this run (the lock, on rank 0) and the checkpoint to resume, if any."""

    path: Path
    lock: RunFolderLock | None
    resume_state: dict[str, Any] | None
    changes: dict[str, tuple[Any, Any]]  # run-defining settings changed on resume (allowed by train.resume_allow)

    sharded: bool = False  # FSDP: checkpoints go to ckpt.dcp/ (sharded_checkpoint.py), else ckpt.pt

    @property
    def checkpoint(self) -> Path:
        return self.path / (sharded.SHARDED_NAME if self.sharded else CHECKPOINT_NAME)

    def release(self) -> None:
        """Give the folder up (the OS also does when the process ends)."""
        if self.lock is not None:
            self.lock.release()


def open_run_folder(cfg: Config, model_config: dict[str, Any], is_main: bool, dataset: dict[str, Any] | None = None) -> RunFolder:
    """Create and lock ``train.out_dir`` (rank 0), clear killed runs' temp files, vet the checkpoint to resume."""
    path = Path(cfg.train.out_dir)
    lock = None
    if is_main:  # one run per folder; taking the lock also proves the folder writable before any step
        lock = RunFolderLock(prepare_out_dir(path)).acquire()
        stale = remove_stale_temp_files(path) + [p for name in (sharded.SHARDED_NAME, sharded.BEST_SHARDED_NAME)
                                                 for p in sharded.remove_stale(path / name)]
        for p in stale:
            print(f"removed {p.relative_to(path)}, left by a killed run (an unfinished save)", flush=True)
    check_resume_allow(cfg)
    state = checkpoint_to_resume(cfg, model_config, path / CHECKPOINT_NAME, dataset)
    changes = vet_resume_config(cfg, state.get("config", {})) if state is not None else {}
    return RunFolder(path, lock, state, changes, sharded=cfg.train.parallel == "fsdp")


def open_for_eval(cfg: Config, model_config: dict[str, Any]) -> RunFolder:
    """``train.eval_only``: the folder's checkpoint, if any, read without locking or writing anything."""
    path = Path(cfg.train.out_dir)
    state = None
    if run_checkpoint(path).exists():
        state = load_resume_state(path)
        check_same_model(state, model_config, run_checkpoint(path), "train.eval_only needs the model it was trained with.")
    return RunFolder(path, None, state, {}, sharded=cfg.train.parallel == "fsdp")


def rng_snapshot(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG states a checkpoint keeps (torch's, and the GPU's on CUDA)."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def training_state(step: int, model: nn.Module, optimizer: torch.optim.Optimizer, model_config: Any, cfg: Config,
                   snapshot: dict[str, Any]) -> dict[str, Any]:
    """Everything a resumed run needs, as one checkpoint dict (``snapshot``: RNG, clock and best val loss)."""
    return {**training_meta(step, model_config, cfg, snapshot), "model": model.state_dict(), "optimizer": optimizer.state_dict()}


def training_meta(step: int, model_config: Any, cfg: Config, snapshot: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's entries besides the weights and the optimizer state (all a sharded one keeps in meta.pt)."""
    return {
        "format_version": FORMAT_VERSION,
        "step": step,
        "model_config": dataclasses.asdict(model_config),
        "model_name": cfg.model.name,
        "optim_name": cfg.optim.name,
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
        **snapshot,
    }


def restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
            path: Path | None = None) -> dict[str, float]:
    """Load a checkpoint's weights, optimizer state and RNG; returns its ``step``, ``best_val`` and ``elapsed_s``.

    Either format into either kind of model: a sharded checkpoint (``sharded_folder``) is read by DCP
    straight into FSDP shards (any process count) or whole into a plain model; a one-file checkpoint
    is cut into shards for an FSDP model."""
    fsdp = any(is_sharded(p) for p in model.parameters())
    if state.get("sharded_folder"):
        if fsdp:
            sharded.restore(state["sharded_folder"], model, optimizer)
        else:
            state = {**state, **sharded.to_single_file(state["sharded_folder"])}
    if "model" in state:
        where = Path(state.get("sharded_folder") or path or "the checkpoint")
        try:
            if fsdp:
                sharded.restore_from_single_file(state, model, optimizer)
            else:
                model.load_state_dict(state["model"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise load_error(e, where, "model") from None
        if not fsdp:
            try:
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, KeyError, ValueError, TypeError) as e:
                raise load_error(e, where, "optimizer") from None
    check_optimizer_shapes(optimizer, Path(state.get("sharded_folder") or path or "the checkpoint"))
    rng = state.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    return {"step": int(state["step"]), "best_val": float(state.get("best_val", float("inf"))),
            "elapsed_s": float(state.get("elapsed_s", 0.0))}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The floating-point state tensors of an optimizer (what a checkpoint of it holds besides counters)."""
    return [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v) and v.is_floating_point() and v.numel()]


@torch.no_grad()
def all_finite(tensors: list[torch.Tensor], flagged: torch.Tensor, distributed: bool) -> bool:
    """Whether every tensor is finite and ``flagged`` (a NaN/inf loss seen) is false, on every rank.
    Norms on device first and one host sync; an exact element check confirms a bad norm (a norm can
    overflow where no element does)."""
    from sophia_train.distributed import all_reduce_mean_

    tensors = [local(t) for t in tensors]  # FSDP: each rank checks its own shards; the vote below covers all
    device = flagged.device
    norms = torch.stack([n.float() for n in torch._foreach_norm(tensors)]) if tensors else torch.zeros(1, device=device)
    bad = (~torch.isfinite(norms).all() | flagged).float().reshape(1)
    all_reduce_mean_([bad])
    if float(bad) == 0:
        return True
    if flagged or distributed:
        return False
    return all(bool(torch.isfinite(t).all()) for t in tensors)
