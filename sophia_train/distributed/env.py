"""torchrun environment, process-group setup and the few collectives the trainer needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sophia_train.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, local rank and world size (1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    """Read torchrun's RANK / LOCAL_RANK / WORLD_SIZE (single process when absent)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))


def pick_device(requested: str, info: DistInfo) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU. Impossible choices raise ``ConfigError``."""

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ConfigError(f"train.device={requested!r} is not a device: use auto, cpu, cuda or cuda:N.") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.device={requested!r}: sophia_train trains on cpu or cuda (auto picks); {device.type} is not supported.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device={requested} asks for CUDA, but this torch ({torch.__version__}) sees no GPU: use "
                f"train.device=cpu (or auto), or install a CUDA build of torch (make install TORCH_SPEC=torch)."
            )
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={requested}: there is no GPU {device.index} (this machine has {torch.cuda.device_count()}).")
        torch.cuda.set_device(device)
    return device


def init_process_group(info: DistInfo, device: torch.device, single: bool = False) -> None:
    """Join the torchrun group: NCCL on GPU, gloo on CPU. ``single``: also make a group of one process
    when started without torchrun (FSDP needs a group even then)."""
    if dist.is_initialized() or not (info.enabled or single):
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if info.enabled:
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    else:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)


def destroy_process_group() -> None:
    """Leave the process group if one was joined (after every rank got here)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def all_reduce_mean_(tensors: list[torch.Tensor], bucket_elems: int = 1 << 25) -> None:
    """Average tensors over all ranks in place, coalesced into flat buckets (no-op in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    bucket: list[torch.Tensor] = []

    def flush() -> None:
        if not bucket:
            return
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
        bucket.clear()

    for t in tensors:
        if bucket and (t.dtype != bucket[0].dtype or sum(b.numel() for b in bucket) + t.numel() > bucket_elems):
            flush()
        bucket.append(t)
    flush()


def all_ranks_agree(flag: torch.Tensor, info: DistInfo) -> bool:
    """Whether a boolean is true on every rank (one all-reduce under torchrun; one host sync)."""
    if info.enabled:
        vote = flag.float().reshape(1)
        all_reduce_mean_([vote])
        return bool(vote == 1)
    return bool(flag)


def free_memory(device: torch.device) -> int | None:
    """Bytes this process could still allocate on ``device``: the GPU's free memory, or the system's
    MemAvailable on CPU; None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """``train.dtype``: ``auto`` is bfloat16 on a GPU that supports it, else float32."""
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[requested]


def check_weights_fit(n_params: int, shards: int, device: torch.device, model: str) -> None:
    """Refuse a model whose fp32 weights and gradients alone (8 bytes per parameter, over ``shards``) exceed
    ``device``'s free memory, before anything is allocated (the allocator would fail deep inside, or the OS
    kill the process). ``model`` names it in the message."""
    need, free = 8 * n_params // shards, free_memory(device)
    if free is not None and need > free:
        raise ConfigError(
            f"model {model} has {n_params / 1e6:,.1f}M parameters: their fp32 weights and gradients alone need "
            f"{need / 2**30:,.1f} GiB{f' per rank over {shards} FSDP shards' if shards > 1 else ''}, but {device} has "
            f"{free / 2**30:,.1f} GiB free (the optimizer state needs more still). Choose a smaller model, or shard it "
            f"with train.parallel=fsdp over more GPUs. Nothing was allocated."
        )
