"""What a benchmark costs: parameters and FLOPs per token of each size, the curvature estimator's
extra FLOPs, and a profile's GPU-hours before running it (``--estimate``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sophia_train.compose import compose_config
from sophia_train.config import total_accum
from sophia_train.curvature import ESTIMATORS
from sophia_train.data import open_dataset
from sophia_train.model import GPT, gpt_config
from sophia_train.studies.benchmark.profiles import Profile, Size, overrides_for
from sophia_train.studies.benchmark.tuning import is_retuned, run_counts


@dataclass
class SizeInfo:
    """What the report needs of a model size: parameters and training FLOPs per token."""

    n_params: int
    flops_per_token: float


def size_info(profile: Profile, size: Size) -> SizeInfo:
    """Parameters and FLOPs per token of ``size`` (the model built on the meta device)."""
    cfg = compose_config([*profile.base, *size.overrides, "optim=adamw"])
    vocab = open_dataset(cfg.data.dir, cfg.data.name).vocab_size if Path(cfg.data.dir).exists() else 50304
    with torch.device("meta"):
        model = GPT(gpt_config(cfg.model, vocab, cfg.data.name))
    return SizeInfo(model.num_params(), model.flops_per_token())


def estimator_overhead(optim: str, point: dict[str, float]) -> float:
    """Extra FLOPs of the optimizer's curvature estimator as a fraction of a training step's."""

    cfg = compose_config(["+model=nano", *overrides_for(optim, point, 100)]).optim
    est = ESTIMATORS.get(getattr(cfg, "estimator", "none") or "none")
    return est.cost * cfg.hess_fraction / cfg.hess_interval if est is not None else 0.0


def estimate(profile: Profile, peak_flops: float = 989e12, mfu: float = 0.4) -> str:
    """GPU-hours of a profile on one GPU of ``peak_flops``: per optimizer, its Phase I runs at the anchor (over the
    tuning seeds), ~3 points per Phase II hyperparameter at every other retuned budget, the ablation, and the
    final seeds at every budget (the mean cost of a budget for those)."""
    cost = {}  # (size, steps) -> GPU-hours of one run
    lines = ["| size | params | budgets (steps) | tokens/param | tokens/step | GPU-hours of one run per budget |",
             "| --- | ---: | --- | --- | ---: | --- |"]
    for size in profile.sizes:
        info = size_info(profile, size)
        cfg = compose_config([*profile.base, *size.overrides, "optim=adamw"])
        tokens_per_step = cfg.train.batch_size * total_accum(cfg.train) * (cfg.train.seq_len or cfg.model.block_size)
        for s in size.steps:
            cost[(size.name, s)] = s * tokens_per_step * info.flops_per_token / (peak_flops * mfu) / 3600
        lines.append(f"| {size.name} | {info.n_params / 1e6:.0f}M | {', '.join(map(str, size.steps))} | "
                     f"{', '.join(f'{s * tokens_per_step / info.n_params:.3g}' for s in size.steps)} | {tokens_per_step:,} | "
                     f"{', '.join(f'{cost[(size.name, s)]:,.1f}' for s in size.steps)} |")
    anchor_size, anchor_steps = profile.anchor
    anchor = cost[(anchor_size.name, anchor_steps)]
    retuned = [c for (name, steps), c in cost.items() if (name, steps) != (anchor_size.name, anchor_steps)
               and is_retuned(size := next(s for s in profile.sizes if s.name == name), size.steps.index(steps))]
    mean = sum(cost.values()) / len(cost)
    lines += ["", "| optimizer | Phase I runs | GPU-hours (Phase I + II + ablation + seeds) |", "| --- | ---: | ---: |"]
    total = 0.0
    for optim in profile.spaces:
        n = run_counts(profile, optim)
        hours = n.phase1 * anchor + n.phase2_per_budget * sum(retuned) + n.ablation * anchor + n.final_seeds * mean
        total += hours
        lines.append(f"| {optim} | ~{n.phase1} | {hours:,.0f} |")
    lines.append(f"\nAbout {total:,.0f} H100-hours for the {len(profile.optims)} optimizers at {mfu:.0%} MFU "
                 f"(Hessian-estimator work and grid extensions not counted).")
    return "\n".join(lines)
