"""Checkpoints and run folders: files (``io``), the run folder's lock and resume vetting (``run_folder``),
the training state (``state``), sharded DCP checkpoints (``sharded``), integrity checks (``integrity``),
which config changes a resume may apply (``resume_changes``), loading a finished run (``load_run``), and
the ``sophia-inspect`` / ``sophia-convert-ckpt`` commands. The names below are the package's public face."""

from sophia_train.atomic import remove_stale_temp_files
from sophia_train.checkpoint.io import (
    BEST_NAME,
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    LOCK_NAME,
    checkpoint_at,
    load_checkpoint,
    load_checkpoint_meta,
    run_checkpoint,
    save_checkpoint,
    saved_model_config,
)
from sophia_train.checkpoint.run_folder import (
    RESUME_FREE_KEYS,
    RunFolder,
    RunFolderLock,
    check_resume_allow,
    check_same_dataset,
    check_same_model,
    checkpoint_to_resume,
    config_changes,
    known_config_keys,
    load_resume_state,
    open_for_eval,
    open_run_folder,
    prepare_out_dir,
    vet_resume_config,
)
from sophia_train.checkpoint.state import all_finite, optimizer_tensors, restore, rng_snapshot, training_meta, training_state

__all__ = [
    "BEST_NAME", "CHECKPOINT_NAME", "FORMAT_VERSION", "LOCK_NAME", "RESUME_FREE_KEYS", "RunFolder", "RunFolderLock",
    "all_finite", "check_resume_allow", "check_same_dataset", "check_same_model", "checkpoint_at", "checkpoint_to_resume",
    "config_changes", "known_config_keys", "load_checkpoint", "load_checkpoint_meta", "load_resume_state", "open_for_eval",
    "open_run_folder", "optimizer_tensors", "prepare_out_dir", "remove_stale_temp_files", "restore", "rng_snapshot",
    "run_checkpoint", "save_checkpoint", "saved_model_config", "training_meta", "training_state", "vet_resume_config",
]
