"""Small pieces every optimizer of this package shares."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from sophia_train.distributed.parallel import local, shard_group, sharded_sum

#: Elements per foreach call on CPU (4 MiB of fp32). Off CUDA a ``torch._foreach_*`` op loops over its
#: tensors and every temporary of the list stays alive until the op ends; over a whole model that is
#: a second copy of the parameters in fresh memory and the step runs at about half speed
#: (bench/results/sophia_update_cpu.md). On CUDA the lists are not cut: fewer launches win there.
CPU_FOREACH_CHUNK = 1 << 20


def check_range(name: str, value: float, low: float = 0.0, high: float = math.inf, *, low_open: bool = False,
                high_open: bool = False) -> None:
    """The constructors' one range check: ``ValueError`` naming ``name`` unless ``value`` lies in the interval
    from ``low`` to ``high`` (ends closed unless ``*_open``); NaN never does."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        raise ValueError(f"Invalid {name}: {value} (must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'})")


def check_betas(betas: Iterable[float], name: str = "betas") -> None:
    """Every beta in [0, 1)."""
    for i, b in enumerate(betas):
        check_range(f"{name}[{i}]", b, 0.0, 1.0, high_open=True)


def evaluate_closure(closure: Callable[[], float] | None):
    """Re-evaluate the loss with gradients enabled, as ``torch.optim`` optimizers do; None without a closure."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def lazy_state(state: dict, p: torch.Tensor, buffers: tuple[str, ...], counters: tuple[str, ...] = ()) -> dict:
    """Fill an empty per-parameter ``state`` with zero ``buffers`` shaped like ``p`` and 0-d ``counters``."""
    if not state:
        for name in counters:
            state[name] = torch.tensor(0.0)
        for name in buffers:
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return state


def numel_chunks(tensors: list[torch.Tensor], limit: int | None) -> list[tuple[int, int]]:
    """Consecutive ``[a, b)`` index ranges holding at most ``limit`` elements each (one range when None).

    A tensor larger than ``limit`` gets a range of its own.
    """
    if limit is None:
        return [(0, len(tensors))] if tensors else []
    spans, start, total = [], 0, 0
    for i, t in enumerate(tensors):
        if i > start and total + t.numel() > limit:
            spans.append((start, i))
            start, total = i, 0
        total += t.numel()
    if start < len(tensors):
        spans.append((start, len(tensors)))
    return spans


def foreach_chunks(params: list[torch.Tensor]) -> list[tuple[int, int]]:
    """Index ranges for the foreach path: the whole list on CUDA, ``CPU_FOREACH_CHUNK``-element pieces elsewhere."""
    return numel_chunks(params, None if params and params[0].is_cuda else CPU_FOREACH_CHUNK)


def unfused_update(group: dict, per_tensor: Callable, foreach: Callable, params: list[torch.Tensor], *lists, **kwargs) -> list:
    """Run ``per_tensor(group, params, *lists)`` (``foreach=False``) or ``foreach`` over each of
    ``foreach_chunks(params)`` (the default); returns what the calls returned.

    For an element-wise rule: FSDP shards (DTensors) are handed over as this rank's local pieces, so
    the update runs on plain tensors in the shards' own memory; what the calls return is per shard.
    """
    params, lists = [local(p) for p in params], [[local(t) for t in x] for x in lists]
    if group.get("foreach") is False:
        return [per_tensor(group, params, *lists, **kwargs)]
    return [foreach(group, params[a:b], *(x[a:b] for x in lists), **kwargs) for a, b in foreach_chunks(params)]


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of all ``tensors`` together (fp32); FSDP shards count once each, over every rank."""
    if not tensors:
        return torch.tensor(0.0)
    squares = torch.stack([local(t).float().pow(2).sum() for t in tensors]).sum()
    return sharded_sum(squares, shard_group(tensors)).sqrt()
