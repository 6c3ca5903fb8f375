"""SIGTERM, SIGINT and SIGUSR1 during training: finish the step, save it, stop; a second signal exits at once.

Clusters stop jobs with SIGTERM (SLURM at its time limit or on preemption, Kubernetes, ``kill``), and
SLURM's ``--signal=USR1@<seconds>`` warns ahead of the limit; Ctrl-C sends SIGINT. The first of these
only sets a flag (``StopSignals.received``); the loop looks at it after each step and, on every rank at the
same step (``stop_vote``), writes a checkpoint of that step and raises ``StoppedBySignal`` (exit code
``EXIT_STOPPED``). A second signal while that happens exits at once (128 + the signal's number); every
file is written atomically, so the previous checkpoint is then still whole. The same SIGTERM or SIGUSR1
arriving again within ``REPEAT_GRACE_S`` is one request delivered twice (SLURM signals every process of a
job step, and torchrun forwards what it gets), not a second one.

Under torchrun the agent forwards SIGTERM and SIGINT to the workers (SIGUSR1 too with
``--signals_to_handle=SIGTERM,SIGINT,SIGUSR1``) and SIGKILLs them after ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``
seconds (30 by default): the step and the save must fit in that. ``die_with_parent`` makes a worker whose
launcher was killed outright get SIGTERM instead of training on alone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from types import FrameType

import torch
import torch.distributed as dist

#: A repeat of the first SIGTERM/SIGUSR1 within this many seconds is the same request delivered twice, not a
#: second one (a second Ctrl-C always counts).
REPEAT_GRACE_S = 5.0
#: Exit code of a run stopped by a signal after saving its checkpoint (sysexits' EX_TEMPFAIL: resume later).
EXIT_STOPPED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopSignals:
    """Catches the stop signals while installed (main thread only); ``received`` names the first one."""

    def __init__(self, announce: bool = True):
        self.received: str | None = None
        self._first = 0.0
        self.announce = announce
        self._previous: dict[int, object] = {}

    def install(self) -> "StopSignals":
        """Start catching (a no-op off the main thread, where Python cannot take signals)."""
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers there were before ``install``."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received == name and signum != signal.SIGINT and time.monotonic() - self._first < REPEAT_GRACE_S:
            return  # the same request delivered twice (SLURM signals torchrun and its workers, torchrun forwards it too)
        if self.received is not None:
            self.restore()
            print(f"\n{name} again: exiting now, without waiting for the save (the previous checkpoint is whole).",
                  file=sys.stderr, flush=True)
            raise SystemExit(128 + signum)
        self.received, self._first = name, time.monotonic()
        if self.announce:
            print(f"\n{name} received: finishing this step, saving a checkpoint of it, then stopping "
                  f"(send it again to exit at once).", file=sys.stderr, flush=True)


def stop_vote(signals: StopSignals, group=None) -> bool:
    """Whether any rank caught a stop signal: one tiny all-reduce on ``group`` under torchrun (every rank
    must call it at the same step), a flag check in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return signals.received is not None
    flag = torch.tensor([1.0 if signals.received else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return bool(flag.item() > 0)


def control_group():
    """A CPU (gloo) process group for the stop vote, so the vote never waits on the GPU's queue; None
    when the default group is gloo already (or there is none)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (prctl PR_SET_PDEATHSIG); a no-op
    elsewhere. If the parent is gone already, send it now."""
    if not sys.platform.startswith("linux"):
        return

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
