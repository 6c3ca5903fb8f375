"""The run folder's safety: exclusive ownership, and resume vetting.

One run per folder: ``RunFolderLock`` holds an OS lock (``fcntl.flock``) on ``run.lock`` for the whole
run. The OS drops it when the process dies, so a SIGKILLed run never blocks its own resume.

Resuming is the same run: ``config_changes`` lists what differs from the checkpoint's config among the
settings that define a run (model, data, optimizer hyperparameters, batch and sequence layout, seed,
schedule); the trainer refuses them unless named in ``train.resume_allow``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sophia_train.atomic import file_in_the_way, remove_stale_temp_files
from sophia_train.checkpoint import sharded
from sophia_train.checkpoint.integrity import check_layout
from sophia_train.checkpoint.io import CHECKPOINT_NAME, LOCK_NAME, load_checkpoint, run_checkpoint, saved_model_config
from sophia_train.checkpoint.resume_changes import refuse_fixed_fields
from sophia_train.config import Config, flatten
from sophia_train.data import dataset_differences
from sophia_train.errors import ConfigError

#: Settings that may change when a run is resumed: where and how it runs, what it reports, never what it computes.
RESUME_FREE_KEYS = (
    "run_name", "reference", "data.dir", "optim.fused", "optim.foreach", "logger.",
    "train.out_dir", "train.resume", "train.overwrite", "train.resume_allow", "train.stop_after_step",
    "train.eval_interval", "train.eval_iters", "train.log_interval", "train.ckpt_interval", "train.device",
    "train.dtype", "train.compile", "train.threads", "train.plot", "train.log_update_stats",
    "train.skip_nonfinite", "train.max_skips_in_row", "train.eval_only", "train.keep_best", "train.parallel",
)


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

    def _open_locked(self) -> int | None:
        """An fd holding the lock on the file now at ``self.path``; None when the file was removed or replaced between
        opening and locking it (its holder released it), so the caller opens it again."""
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
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        return fd

    def acquire(self) -> "RunFolderLock":
        """Take the lock or raise ``ConfigError`` naming the process that holds it; also proves the folder writable."""
        fd = None
        while fd is None:
            fd = self._open_locked()
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
        """Remove the lock file and drop the lock (the OS drops the lock when the process ends; a file left by a
        killed process is taken over by the next run)."""
        if self._fd is not None:
            try:
                self.path.unlink()  # while still locked: a run that opened the old file sees it gone and opens anew
            except FileNotFoundError:
                pass
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


