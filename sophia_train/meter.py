"""The metrics of the steps since the last log line, and the console line that reports them.

Sums stay on the device between log lines (no host sync per step); a log line costs one all-reduce
across ranks and one host sync. Throughput excludes evaluation time (``restart_clock`` after an eval) and,
with ``torch.compile``, the first step of a run, where compilation happens: it is timed apart and reported
once as ``compile_s``, so tokens/s and MFU are the compiled model's.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from sophia_train.distributed import all_reduce_mean_
from sophia_train.metrics import format_duration

SUMMED = ("loss", "grad_norm", "not_clipped_frac")  # averaged over the window's steps (and ranks)


class StepMeter:
    """Accumulates ``Trainer.train_step`` outputs and turns them into ``train`` rows of metrics.jsonl."""

    def __init__(self, device: torch.device, tokens_per_step: int, grad_clip: float, count_skips: bool,
                 mfu_per_token_s: float | None = None, first_step_compiles: bool = False):
        self.device, self.tokens_per_step = device, tokens_per_step
        self.grad_clip, self.count_skips, self.mfu_per_token_s = grad_clip, count_skips, mfu_per_token_s
        self.untimed_first_step = first_step_compiles
        self.compile_s: float | None = None
        self.restart()
        self.restart_clock()

    def restart(self) -> None:
        """Empty the window (after a log line)."""
        self.window: dict[str, Any] = {}
        self.steps = self.timed_steps = self.skipped = self.hess_count = 0
        self.clipped: Any = 0.0
        self.hess_time = 0.0

    def restart_clock(self) -> None:
        """Start timing from now (after a log line or an evaluation)."""
        self.t0 = time.perf_counter()

    def add(self, out: dict[str, Any]) -> None:
        """Fold one step's outputs in (tensors stay on the device)."""
        self.steps += 1
        self.skipped += bool(out.get("skipped"))
        if self.untimed_first_step:  # the compile step: timed apart, then the clock starts over
            self.untimed_first_step = False
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_s = time.perf_counter() - self.t0
            self.restart_clock()
        else:
            self.timed_steps += 1
        for key in SUMMED:
            if key in out:
                self.window[key] = self.window.get(key, 0) + out[key]
        if "clipped" in out:
            self.clipped = self.clipped + out["clipped"]
        if "hessian_s" in out:
            self.hess_time += out["hessian_s"]
            self.hess_count += 1

    def means(self) -> dict[str, float]:
        """Window means of ``SUMMED`` over the steps that were not skipped, averaged over ranks."""
        if not self.window:
            return {}
        stats = torch.stack([torch.as_tensor(v, device=self.device, dtype=torch.float32).reshape(()) for v in self.window.values()])
        all_reduce_mean_([stats])
        used = self.steps - self.skipped  # every rank skips the same steps
        return {k: float(v) / used for k, v in zip(self.window, stats.tolist())}

    def record(self, step: int, lr: float, elapsed_s: float, means: dict[str, float], extra: dict[str, float]) -> dict[str, Any]:
        """The ``train`` row for a log line at ``step`` (``extra``: update and curvature statistics)."""
        seconds = time.perf_counter() - self.t0
        timed = self.timed_steps
        tok_s = self.tokens_per_step * timed / seconds if timed else math.nan
        rec = {"step": step, "tokens": step * self.tokens_per_step, "lr": lr,
               "ms_per_step": seconds * 1000 / timed if timed else math.nan, "tokens_per_s": tok_s, "elapsed_s": elapsed_s, **means}
        if self.compile_s is not None and timed < self.steps:  # this window held the compile step
            rec["compile_s"] = self.compile_s
        used = self.steps - self.skipped
        if self.grad_clip > 0 and used:
            rec["grad_clip_rate"] = float(self.clipped) / used
        if self.count_skips:
            rec["skipped_steps"] = self.skipped
        rec.update(extra)
        if self.hess_count and "hessian_norm" in extra:
            rec["hessian_s"] = self.hess_time / self.hess_count
        if self.mfu_per_token_s:
            rec["mfu"] = self.mfu_per_token_s * tok_s
        return rec

    @staticmethod
    def line(rec: dict[str, Any], max_steps: int, steps_left: int) -> str:
        """The console line of a ``train`` row: step, loss, LR, speed, ETA and the diagnostics present."""
        extra = ""
        for key, fmt in (("grad_clip_rate", " | clip {:.0%}"), ("not_clipped_frac", " | not-clipped {:.0%}"),
                         ("hessian_norm", " | |h| {:.3g}"), ("mfu", " | mfu {:.1%}")):
            if key in rec:
                extra += fmt.format(rec[key])
        if rec.get("skipped_steps"):
            extra += f" | skipped {rec['skipped_steps']}"
        loss = f"{rec['loss']:.4f}" if "loss" in rec else "n/a (all skipped)"
        eta = steps_left * rec["ms_per_step"] / 1000 if math.isfinite(rec["ms_per_step"]) else math.nan
        return (f"step {rec['step']:>6}/{max_steps} | loss {loss} | lr {rec['lr']:.2e} | {rec['ms_per_step']:.1f} ms/step | "
                f"{rec['tokens_per_s']:,.0f} tok/s | ETA {format_duration(eta)}{extra}"
                + (f" | first step {rec['compile_s']:.1f} s (compile; not in tok/s)" if "compile_s" in rec else ""))
