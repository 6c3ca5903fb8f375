"""Data parallelism applied to a built model as a separate step: DDP, or FSDP2 (``train.parallel``).

The model file knows nothing of either. ``apply_fsdp`` shards every transformer block and then the
root (embeddings, tied head, final LayerNorm) with ``torch.distributed.fsdp.fully_shard``: each rank
keeps 1/world of every parameter, gradient and optimizer-state tensor (dim-0 shards, as DTensors),
all-gathers a block's parameters just before it runs and reduce-scatters its gradients (averaged over
ranks) right after its backward. On CUDA with bf16 the gather and the compute are in bf16 while the
sharded master weights, the gradients and their reduction stay in fp32 (``MixedPrecisionPolicy``).

Optimizers see DTensor parameters. Element-wise update rules run on each rank's local shard
(``local``); anything global (a norm, a clipped fraction) is a sum of local pieces all-reduced over
the shard group (``sharded_sum``).

FSDP, DTensor and DDP are imported where they are used: DTensor alone costs about 1.5 s of
startup, which a single-process run never needs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn as nn


def is_sharded(t: torch.Tensor) -> bool:
    """Whether ``t`` is a DTensor (an FSDP shard) rather than a whole tensor."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (sharing its memory: in-place writes update the DTensor); ``t`` itself otherwise."""
    return t.to_local() if is_sharded(t) else t


def shard_group(tensors: Iterable[torch.Tensor]) -> dist.ProcessGroup | None:
    """The process group the DTensors among ``tensors`` are sharded over (None when there are none)."""
    for t in tensors:
        if is_sharded(t):
            return t.device_mesh.get_group()
    return None


def sharded_sum(value: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """``value`` summed over ``group`` (a sum of per-shard pieces becomes the global sum); unchanged without a group."""
    if group is None:
        return value
    out = value.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


def like_param(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` (this rank's shard, or the whole tensor) laid out as ``param``: a DTensor with the same
    placements when ``param`` is one; a whole ``value`` is cut to this rank's shard first."""
    if not is_sharded(param):
        return value
    from torch.distributed.tensor import DTensor, distribute_tensor

    if value.shape == param.shape and not is_sharded(value):  # a whole tensor: keep this rank's piece (no communication)
        return distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
    return DTensor.from_local(value, param.device_mesh, param.placements, shape=param.shape, stride=param.stride())


def apply_fsdp(model: nn.Module, device: torch.device, param_dtype: torch.dtype) -> nn.Module:
    """Shard ``model`` in place with FSDP2: one unit per block in ``model.transformer.h``, then the root.

    ``param_dtype`` bf16 gathers and computes in bf16 with fp32 gradient reduction and fp32 master
    weights; fp32 leaves everything in fp32. Returns the same module (now an ``FSDPModule``).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype != torch.float32 else MixedPrecisionPolicy()
    blocks = list(model.transformer.h)
    for i, block in enumerate(blocks):
        # the last block's parameters would be gathered again at once by the backward: keep them
        fully_shard(block, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mp_policy=mp)
    return model


def apply_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``module`` in DistributedDataParallel (gradients all-reduced on the last micro-batch)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the gradients (fp32), accumulated in fp64 so that it does not depend on how the
    tensors are cut: whole, or FSDP shards summed across ranks, give the same fp32 value."""
    if not grads:
        return torch.zeros(())
    parts = torch._foreach_norm([local(g) for g in grads], 2, dtype=torch.float64)
    return sharded_sum(torch.stack(parts).square().sum(), shard_group(grads)).sqrt().float()


def clip_grads_(params: list[torch.Tensor], max_norm: float, norm: torch.Tensor) -> None:
    """Scale the gradients of ``params`` so that their global norm ``norm`` is at most ``max_norm``
    (``torch.nn.utils.clip_grads_with_norm_``'s rule, applied shard by shard under FSDP)."""
    grads = [p.grad for p in params if p.grad is not None]
    if shard_group(grads) is None:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    torch._foreach_mul_([local(g) for g in grads], coef.to(grads[0].dtype))


@torch.no_grad()
def update_size(params: list[torch.Tensor], before: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Max and mean |delta theta| of a step over all parameters (every rank's shards under FSDP)."""
    deltas = [(local(p) - local(b)).abs() for p, b in zip(params, before)]
    biggest = torch.stack([d.max() if d.numel() else d.new_zeros(()) for d in deltas]).max()
    total = torch.stack([sum(d.sum() for d in deltas), biggest.new_tensor(float(sum(d.numel() for d in deltas)))])
    group = shard_group(params)
    if group is not None:
        dist.all_reduce(biggest, op=dist.ReduceOp.MAX, group=group)
        total = sharded_sum(total, group)
    return {"update_max": biggest, "update_mean": total[0] / total[1]}
