"""How many CPU threads a training process gives torch (``train.threads``).

torch starts one intra-op thread per core it sees, whatever else runs on the machine: on a busy CPU the
threads then wait on one another and a step can take several times longer than with fewer threads (on a
2-core machine under a concurrent load, one thread ran the demo 5x faster than torch's default of two).
``train.threads=auto`` (the default) takes

* the cores this process may run on (its CPU affinity, capped by a cgroup CPU quota where one is set),
* divided among the processes torchrun starts on this machine (``LOCAL_WORLD_SIZE``),
* less the cores the 1-minute load average says other work already keeps busy,

and never fewer than one; ``OMP_NUM_THREADS``, when set, is taken as the user's choice. A number sets the
count; ``0`` or ``null`` leaves torch's default.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count chosen for this process (None: torch's default left alone) and why, in words."""

    threads: int | None
    reason: str


def usable_cores(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 quota when one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def auto_threads(cores: int, local_ranks: int, load: float | None) -> ThreadChoice:
    """The ``auto`` rule: ``cores / local_ranks``, lowered to the share of the cores the load leaves free."""
    local_ranks = max(1, local_ranks)
    share = max(1, cores // local_ranks)
    parts = [f"{cores} core{'s' if cores != 1 else ''} for this process"]
    if local_ranks > 1:
        parts.append(f"{local_ranks} local ranks")
    threads = share
    if load is not None:
        free = max(0.0, cores - load)
        threads = max(1, min(share, math.floor(free / local_ranks + 0.5)))  # round: 1.6 free cores are 2
        parts.append(f"load average {load:.1f}" + (f" leaves {free:.1f} free" if threads < share else ""))
    return ThreadChoice(threads, "auto: " + ", ".join(parts))


def choose_threads(setting: Any, env: dict[str, str] | None = None, cores: Callable[[], int] = usable_cores,
                   load: Callable[[], float | None] = _load_average) -> ThreadChoice:
    """The thread count for ``train.threads`` = ``auto`` | N | 0 / None, in this environment."""
    env = os.environ if env is None else env
    if setting is None or setting == 0:
        return ThreadChoice(None, "torch's default (train.threads=0)")
    if setting != "auto":
        return ThreadChoice(int(setting), "train.threads")
    if env.get("OMP_NUM_THREADS", "").strip().isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return ThreadChoice(int(env["OMP_NUM_THREADS"]), "auto: OMP_NUM_THREADS is set")
    return auto_threads(cores(), int(env.get("LOCAL_WORLD_SIZE", "1") or 1), load())


def apply_threads(setting: Any) -> ThreadChoice:
    """Choose the thread count for ``setting`` and give it to torch; return the choice for the banner."""
    choice = choose_threads(setting)
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    return choice


def describe(choice: ThreadChoice) -> str:
    """``"torch CPU threads: 2 (auto: ...)"``, the banner's line."""
    count = torch.get_num_threads() if choice.threads is None else choice.threads
    return f"torch CPU threads: {count} ({choice.reason})"
