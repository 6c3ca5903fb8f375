"""Writes one run's checkpoints in the run's format: a single file from rank 0 (``io``), or with FSDP a
sharded folder every rank writes its part of (``sharded``). After a write of the run's checkpoint, one in
the other format left by an earlier invocation is stale and removed; a failed write (a full disk, however
torch reports it) is one paragraph naming the checkpoint that is still intact. Whether a state may be
saved at all (finite, trained on) is the loop's policy, not this module's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from sophia_train.atomic import describe_write_error
from sophia_train.checkpoint import sharded
from sophia_train.checkpoint.io import BEST_NAME, CHECKPOINT_NAME, save_checkpoint
from sophia_train.checkpoint.resume_changes import apply_optimizer_changes
from sophia_train.checkpoint.state import restore, training_meta, training_state
from sophia_train.errors import ConfigError
from sophia_train.model import GPTConfig


class Checkpointer:
    """The checkpoints of one run folder: ``path`` (ckpt.pt or ckpt.dcp), ``best_path`` (best.pt or best.dcp)."""

    def __init__(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, gpt_config: GPTConfig, cfg: Any,
                 fsdp: bool, is_main: bool):
        self.path, self.model, self.optimizer, self.gpt_config, self.cfg = Path(path), model, optimizer, gpt_config, cfg
        self.fsdp, self.is_main = fsdp, is_main
        self.best_path = self.path.parent / (sharded.BEST_SHARDED_NAME if fsdp else BEST_NAME)
        self.last_step: int | None = None  # step of the checkpoint on disk that this run wrote or resumed

    @property
    def writes_here(self) -> bool:
        """Whether this rank writes checkpoints: rank 0, or every rank of an FSDP run (each its shard)."""
        return self.is_main or self.fsdp

    def note(self) -> str:
        """Where the last good checkpoint is, for messages."""
        if self.last_step is None:
            return "no checkpoint was written"
        return f"the last checkpoint ({self.path}, step {self.last_step}) is intact"

    def restore(self, state: dict[str, Any], changes: dict[str, tuple[Any, Any]], device: torch.device) -> dict[str, Any]:
        """Load a checkpoint's ``state`` into the model and optimizer, then put in again the optimizer settings the
        resume was allowed to change (``load_state_dict`` brought back the saved ones); returns step, best val, clock."""
        done = restore(state, self.model, self.optimizer, device, self.path)
        apply_optimizer_changes(self.optimizer, self.model, self.cfg.optim, state.get("config", {}).get("optim", {}), changes, device)
        return done

    def write(self, path: Path, step: int, snapshot: dict[str, Any]) -> None:
        """Write the state of ``step`` to ``path`` atomically (call on every rank where ``writes_here``)."""
        try:
            self._write_state(path, step, snapshot)
        except OSError as e:
            raise ConfigError(
                f"could not write the checkpoint of step {step} to {path}: {describe_write_error(e)}. The partial file was "
                f"removed and {self.note()}; free space or fix the folder, then continue with train.resume=true."
            ) from None

    def _write_state(self, path: Path, step: int, snapshot: dict[str, Any]) -> None:
        if self.fsdp:
            meta = training_meta(step, self.gpt_config, self.cfg, snapshot)
            sharded.save(path, step, self.model, self.optimizer, meta, self.is_main)
        else:
            save_checkpoint(training_state(step, self.model, self.optimizer, self.gpt_config, self.cfg, snapshot), path)
        if self.is_main and path == self.path:
            self._remove_stale_format()

    def _remove_stale_format(self) -> None:
        """Remove the run's checkpoint in the format this run does not write (an earlier invocation's)."""
        other = self.path.parent / (CHECKPOINT_NAME if self.fsdp else sharded.SHARDED_NAME)
        if other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
        else:
            other.unlink(missing_ok=True)
