"""Entry point: ``python -m sophia_train +model=NAME [optim=NAME] [key=value ...]`` (also under torchrun).

Composes the Hydra config, validates it, builds the trainer and runs it. Problems the user can fix
are printed as one paragraph, never as a traceback. Exit codes: 0 done, 2 a problem with the config or
the inputs, 3 training diverged, 75 stopped by SIGTERM/SIGINT/SIGUSR1 after saving (resume with
train.resume=true), 128 + N a second signal N (exited at once), 130 interrupted before training began.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from sophia_train.compose import check_known_keys, config_dir, overlay_saved, precheck, register_configs, resume_from_folder
from sophia_train.distributed import destroy_process_group, dist_info_from_env
from sophia_train.distributed.stop_signals import EXIT_STOPPED
from sophia_train.errors import ConfigError, StoppedBySignal, TrainingDiverged
from sophia_train.interop.pretrained import apply_init_from
from sophia_train.multirun import job_line, multirun_job, record_job, refuse_nesting
from sophia_train.trainer import Trainer

CONFIG_DIR = config_dir()


def available(group: str) -> list[str]:
    """Names of the yaml configs in one config group."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def usage() -> str:
    """What a bare ``python -m sophia_train`` prints: the models and how to start."""
    return (
        "sophia_train: choose a model with +model=NAME.\n"
        f"  models: {', '.join(available('model'))}\n"
        f"  optimizers (optim=, default sophia_g): {', '.join(available('optim'))}\n"
        f"  datasets (data=): {', '.join(available('data'))}\n"
        "examples:\n"
        "  python -m sophia_train +model=tiny optim=sophia_g            # CPU demo on the default corpus\n"
        "  python -m sophia_train +model=gpt2_medium optim=sophia_g     # OpenWebText (prepare it first)\n"
        "  torchrun --nproc_per_node=8 -m sophia_train +model=gpt2_large optim=sophia_g\n"
        "any field can be overridden, e.g. optim.lr=3e-4 train.max_steps=200 (see configs/)."
    )


#: A resume from the run folder alone (compose.resume_from_folder): the run's saved config and the user's argv.
_RESUMING: tuple[dict, list[str]] | None = None


def run(cfg_node: DictConfig) -> dict | None:
    """Validate and train from a composed config; returns the trainer's summary (None: nothing to do)."""

    if _RESUMING is not None:
        overlay_saved(cfg_node, *_RESUMING)
    apply_init_from(cfg_node)
    if cfg_node.get("model") is None:
        print(usage())
        return None
    try:
        cfg = OmegaConf.to_object(cfg_node)
    except InterpolationResolutionError as e:  # e.g. a Table 2 lookup with no entry
        msg = str(e).splitlines()[0]
        raise ConfigError(msg.split("resolving interpolation: ", 1)[-1]) from None
    check_known_keys(cfg_node, cfg)  # a key added with + or ++ that no schema has would be dropped silently
    job = multirun_job()
    if job:
        refuse_nesting(cfg.train.out_dir)
        cfg.train.out_dir = str(Path(cfg.train.out_dir) / job.dir_name)
        if os.environ.get("RANK", "0") == "0":
            print(job_line(job, cfg.train.out_dir), flush=True)
    try:
        trainer = Trainer(cfg, dist_info_from_env())
        summary = trainer.fit()
    finally:
        destroy_process_group()
    if job and os.environ.get("RANK", "0") == "0":
        record_job(job, cfg.train.out_dir, summary)
    return summary


def _fail(message: str, code: int) -> None:
    """Print a user-facing error once (rank 0 under torchrun) and exit with ``code``."""
    if os.environ.get("RANK", "0") == "0":
        print(message if code == EXIT_STOPPED else f"error: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as e:
        _fail(str(e), 2)
    except TrainingDiverged as e:
        _fail(str(e), 3)
    except StoppedBySignal as e:
        _fail(str(e), EXIT_STOPPED)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint (if any) is intact; continue with train.resume=true", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    """Console entry point."""
    global _RESUMING
    register_configs()
    try:
        folder = resume_from_folder(sys.argv[1:])  # train.out_dir=RUN train.resume=true: the run's own config
        if folder is not None:
            choices, saved = folder
            _RESUMING = (saved, list(sys.argv[1:]))
            sys.argv[1:1] = choices
        precheck(sys.argv[1:], CONFIG_DIR)  # Hydra's own refusals, in the project's words and exit code
    except ConfigError as e:
        _fail(str(e), 2)
    _hydra_main()


if __name__ == "__main__":
    main()
