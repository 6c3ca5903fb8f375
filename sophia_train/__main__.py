"""Entry point: ``python -m sophia_train +model=NAME [optim=NAME] [key=value ...]`` (also under torchrun).

Composes the Hydra config, validates it, builds the trainer and runs it. Problems the user can fix
are printed as one paragraph (exit code 2), never as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, TrainingDiverged, config_dir, register_configs

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


def run(cfg_node: DictConfig) -> dict | None:
    """Validate and train from a composed config; returns the trainer's summary (None: nothing to do)."""
    from .distributed import destroy_process_group, dist_info_from_env
    from .trainer import Trainer

    if cfg_node.get("model") is None:
        print(usage())
        return None
    cfg = OmegaConf.to_object(cfg_node)
    try:
        trainer = Trainer(cfg, dist_info_from_env())
        return trainer.fit()
    finally:
        destroy_process_group()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint (if any) is intact; continue with train.resume=true", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    """Console entry point."""
    register_configs()
    _hydra_main()


if __name__ == "__main__":
    main()
