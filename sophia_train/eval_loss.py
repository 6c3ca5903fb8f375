"""The loop's evaluation: the mean loss over fixed batches of a split, the same batches at every
evaluation, summed over ranks (with FSDP every rank runs as many forwards, spare ones not counted)."""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn as nn

from sophia_train.data import BatchSampler
from sophia_train.distributed import DistInfo


@torch.no_grad()
def eval_loss(model: nn.Module, sampler: BatchSampler, split: str, eval_iters: int, info: DistInfo, fsdp: bool,
              autocast: contextlib.AbstractContextManager, device: torch.device) -> float:
    """Mean loss of ``model`` over ``eval_iters`` fixed batches of ``split`` (train batches from a step the
    schedule never reaches), batches split over ranks."""
    world = info.world_size
    model.eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    # FSDP gathers parameters inside every forward: all ranks must run as many (spare ones not counted)
    rounds = -(-eval_iters // world) if fsdp else len(range(info.rank, eval_iters, world))
    for r in range(rounds):
        i = info.rank + r * world
        x, y = sampler.get(split, 0 if split == "val" else 1 << 40, i % eval_iters)
        with autocast:
            _, loss = model(x, y)
        if i < eval_iters:
            total[0] += loss.double()
            total[1] += 1
    model.train()
    if info.enabled:
        dist.all_reduce(total)
    return float(total[0] / total[1])
