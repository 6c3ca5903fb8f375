"""The benchmark's workers as a Hydra app (``configs/benchmark.yaml``): each job trains every run of one
optimizer of a profile into a shared results folder, so a multirun over ``optimizer=`` goes wherever a
Hydra launcher sends it, e.g. SLURM through the submitit launcher (``hydra/launcher=slurm``).

    python -m sophia_train.studies.benchmark.jobs -m hydra/launcher=slurm profile=gpu_small out=/shared/bench optimizer=adamw,sophia_g
    python scripts/optimizer_benchmark.py --profile gpu_small --out /shared/bench --report-only

Re-submitting the same command skips finished runs and continues half-finished ones (see ``benchmark``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from sophia_train.compose import config_dir
from sophia_train.studies.benchmark.cli import main as benchmark_main


def worker_args(cfg: DictConfig, out: str) -> list[str]:
    """The ``optimizer_benchmark.py`` command line of one job: its optimizer's runs, no report."""
    args = ["--profile", str(cfg.profile), "--out", out, "--optims", str(cfg.optimizer), "--runs-only"]
    if cfg.get("threads"):
        args += ["--threads", str(int(cfg.threads))]
    if cfg.get("data_dir"):
        args += ["--data-dir", hydra.utils.to_absolute_path(str(cfg.data_dir))]
    return args


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="benchmark")
def main(cfg: DictConfig) -> int:
    """One benchmark worker: ``benchmark.main`` on this job's optimizer."""

    return benchmark_main(worker_args(cfg, hydra.utils.to_absolute_path(str(cfg.out))))


if __name__ == "__main__":
    main()
