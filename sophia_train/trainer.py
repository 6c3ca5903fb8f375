"""The training loop. One loop for every optimizer; curvature estimation is a hook it calls.

Order of one optimizer step (``step`` counts completed steps, 0-based while running):

    lr <- schedule(step)
    for each micro-batch of this rank: forward, backward (DDP syncs on the last one)
    gradient norm; with train.skip_nonfinite a NaN/inf loss or norm skips the rest of the step
    write the previous step's pending checkpoint (its state has now given a finite loss and gradient)
    if the optimizer takes curvature and step % k == 0:       # Sophia Alg. 3, line 7 (t mod k = 1)
        h_hat <- the estimator on a share of this step's micro-batches  # .grad untouched
        optimizer.update_hessian(h_hat)
    clip the global grad norm (real gradient only)
    optimizer.step()
    log / eval / checkpoint

A checkpoint is only written for a state that trains: its parameters and optimizer state are finite,
and so are every loss and gradient norm since the last checkpoint, including the loss and gradient of
the saved parameters themselves. So the checkpoint of step s is written by step s + 1, after its
forward/backward and before its update (the state is still exactly that of step s; the RNG state is
the one step s ended with); the last one right after the final evaluation.

Three views of one model: ``model`` is the plain ``GPT`` (parameters, checkpoints, double backward);
``compiled_model`` is ``torch.compile(model)`` with ``train.compile``, else ``model`` (evaluation and
the GNB forward); ``train_model`` is what a step runs through: ``torch.compile(DDP(model))`` under torchrun
(all-reduce overlaps the backward). Under ``train.parallel=fsdp`` all three are one module, sharded in place
by ``parallel.apply_fsdp`` (blocks compiled first): DTensor shards, statistics summed over ranks, sharded
checkpoint folders (``checkpoint/sharded.py``, written by ``checkpoint/checkpointer.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shlex
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from sophia_train import checkpoint as ckpt
from sophia_train.checkpoint.checkpointer import Checkpointer
from sophia_train.config import Config, accum_per_rank, total_accum, validate
from sophia_train.curvature import ESTIMATORS, check_estimator
from sophia_train.data import BatchSampler, open_dataset
from sophia_train.distributed import DistInfo, all_ranks_agree, check_weights_fit, init_process_group, pick_device, pick_dtype
from sophia_train.distributed.parallel import apply_ddp, apply_fsdp, clip_grads_, grad_norm, update_size
from sophia_train.distributed.stop_signals import StopSignals, control_group, die_with_parent, stop_vote
from sophia_train.distributed.threads import apply_threads
from sophia_train.errors import ConfigError, StoppedBySignal, TrainingDiverged
from sophia_train.eval_loss import eval_loss
from sophia_train.hints import script_command
from sophia_train.interop.pretrained import check_tokenizer, load_init_weights
from sophia_train.meter import StepMeter
from sophia_train.metrics import device_peak_flops, open_run_log
from sophia_train.model import GPT, gpt_config, parameter_count
from sophia_train.optim import build_optimizer, curvature_norm, hessian_estimator, optimizer_step, step_stats, update_curvature
from sophia_train.reporting import already_done, banner_lines, eval_only, finish
from sophia_train.schedule import lr_at, schedule_args


class Trainer:
    """Builds every component from the config, checks inputs before heavy work, and runs ``fit``."""

    def __init__(self, cfg: Config, info: DistInfo | None = None):
        self.cfg, self.info, t = cfg, info or DistInfo(), cfg.train
        validate(cfg, self.info.world_size)
        check_estimator(cfg.optim)
        self.device = pick_device(t.device, self.info)
        self.total_accum = total_accum(t, self.info.world_size)  # micro-batches per step over all ranks
        self.accum = accum_per_rank(self.total_accum, self.info.world_size)
        self.seq_len = t.seq_len or cfg.model.block_size
        self.tokens_per_step = t.batch_size * self.total_accum * self.seq_len

        # --- cheap checks first: data, model shape, run folder, checkpoint compatibility ----------
        self.dataset = open_dataset(cfg.data.dir, cfg.data.name, script_command("prepare_data.py", cfg.data.name))
        self.gpt_config = gpt_config(cfg.model, self.dataset.vocab_size, cfg.data.name)
        self.dataset_identity = {"name": cfg.data.name, **self.dataset.identity()}  # checkpoints keep it; a resume compares it
        if cfg.init_from:
            check_tokenizer(cfg.init_from, self.dataset.tokenizer_spec, cfg.data.name)
        if t.eval_only:
            self.folder = ckpt.open_for_eval(cfg, dataclasses.asdict(self.gpt_config))
        else:
            self.folder = ckpt.open_run_folder(cfg, dataclasses.asdict(self.gpt_config), self.info.is_main, self.dataset_identity)
        self.out_dir, self.ckpt_path = self.folder.path, self.folder.checkpoint

        # --- device, process group, model, optimizer ------------------------------------------------
        self.threads = apply_threads(t.threads)
        self.fsdp = t.parallel == "fsdp"
        init_process_group(self.info, self.device, single=self.fsdp)
        self.control_group = control_group()  # the per-step stop vote, on the CPU
        if self.info.enabled:
            die_with_parent()  # a killed torchrun agent: SIGTERM, so this worker saves and stops instead of training on
        self.ptdtype = pick_dtype(t.dtype, self.device)
        self.autocast = torch.autocast(self.device.type, dtype=self.ptdtype) if self.ptdtype != torch.float32 else contextlib.nullcontext()
        g = self.gpt_config
        check_weights_fit(parameter_count(g), self.info.world_size if self.fsdp else 1, self.device,
                          f"{cfg.model.name} ({g.n_layer}L/{g.n_head}H/{g.n_embd}d, vocab {g.vocab_size})")
        torch.manual_seed(t.seed)
        self.model = GPT(self.gpt_config).to(self.device)
        if cfg.init_from and self.folder.resume_state is None:  # a resumed run has its own weights
            load_init_weights(cfg.init_from, self.model)
        if self.fsdp:  # shard before the optimizer exists, so that its state is sharded too
            if t.compile:
                for block in self.model.transformer.h:
                    block.compile()
            apply_fsdp(self.model, self.device, self.ptdtype)
            self.autocast = contextlib.nullcontext()  # FSDP's mixed-precision policy casts instead
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device)
        self.estimator = ESTIMATORS.get(hessian_estimator(cfg.optim) or "")
        self.checkpoints = Checkpointer(self.ckpt_path, self.model, self.optimizer, self.gpt_config, cfg, self.fsdp, self.info.is_main)
        self._init_progress()
        self.compiled_model: nn.Module = torch.compile(self.model) if t.compile and not self.fsdp else self.model
        self.train_model: nn.Module = self.compiled_model
        if self.info.enabled and not self.fsdp:  # compile around DDP: Dynamo cuts the graph at DDP's buckets, so
            ddp = apply_ddp(self.model, self.device)  # each bucket's all-reduce overlaps the rest of the backward
            self.train_model = torch.compile(ddp) if t.compile else ddp
        self.sampler = BatchSampler(self.dataset, self.seq_len, t.batch_size, t.seed, self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.peak_flops = device_peak_flops(self.device)
        self.logger = open_run_log(cfg, self.out_dir, self.start_step if self.resumed else None, self.info.is_main and not t.eval_only)
        self.logger.checkpoint_note = lambda: self.checkpoints.note().capitalize()

    def _init_progress(self) -> None:
        """Counters of the run, from its checkpoint when resuming."""
        self.start_step, self.best_val, self.elapsed_base = 0, math.inf, 0.0  # elapsed: earlier invocations
        self.pending_save: tuple[int, dict[str, Any]] | None = None  # (step, its snapshot): written by the next step
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)  # a NaN/inf loss or grad norm since the last save
        self._t_start = time.perf_counter()
        self.resumed = self.folder.resume_state is not None
        if self.resumed:
            done = self.checkpoints.restore(self.folder.resume_state, self.folder.changes, self.device)
            if not self._state_is_finite():  # this project never saves such a state
                raise ConfigError(
                    f"the checkpoint {self.ckpt_path} (step {done['step']}) holds NaN/inf weights or optimizer state, so it "
                    f"cannot be resumed: it was not written by a healthy sophia_train run (which never saves such a state) "
                    f"or was altered since. Start a new run (train.overwrite=true) or resume from a good copy; it was left untouched."
                )
            self.start_step = self.checkpoints.last_step = done["step"]
            self.best_val, self.elapsed_base = done["best_val"], done["elapsed_s"]
            self.folder.resume_state = None  # the weights are loaded: do not keep a second copy

    def _state_is_finite(self) -> bool:
        """Whether the parameters and optimizer state are finite and no NaN/inf loss was seen since the last save, on
        every rank (what a checkpoint must be, both when it is written and when a resume reads one)."""
        tensors = [p.detach() for p in self.model.parameters() if p.requires_grad] + ckpt.optimizer_tensors(self.optimizer)
        return ckpt.all_finite(tensors, self.nonfinite, self.info.enabled or self.fsdp)

    def print(self, *args) -> None:
        """Print on rank 0 only."""
        if self.info.is_main:
            print(*args, flush=True)

    # ------------------------------------------------------------------------------------------------
    def evaluate(self, split: str = "val") -> float:
        """Mean loss over ``eval_iters`` fixed batches of ``split`` (``eval_loss``)."""
        t = self.cfg.train
        return eval_loss(self.compiled_model, self.sampler, split, t.eval_iters, self.info, self.fsdp, self.autocast, self.device)

    def elapsed(self) -> float:
        """Training wall-clock seconds, counting earlier invocations of a resumed run."""
        return self.elapsed_base + time.perf_counter() - self._t_start

    # -- checkpoints ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint records besides weights and optimizer state, as of now (RNG, clock, best val)."""
        return {"rng": ckpt.rng_snapshot(self.device), "elapsed_s": self.elapsed(), "best_val": self.best_val,
                "tokenizer": self.dataset.tokenizer_spec,  # so sample/export need no data folder
                "dataset": self.dataset_identity}

    def save(self, step: int, snapshot: dict[str, Any] | None = None) -> None:
        """Write the full training state (rank 0) atomically; all ranks wait for it. A state that is not
        finite is never written: the run stops with the previous checkpoint untouched."""
        if not self._state_is_finite():
            raise TrainingDiverged(
                f"training diverged: the state after step {step} was not saved because its parameters or optimizer state, "
                f"or a loss or gradient norm since the last checkpoint (its own included), is NaN/inf; "
                f"{self.checkpoints.note()}. Lower optim.lr, raise train.warmup_steps, keep train.grad_clip on, or set "
                f"train.skip_nonfinite=true to skip rare bad steps."
            )
        if self.checkpoints.writes_here:  # FSDP: every rank writes its shard
            self.checkpoints.write(self.ckpt_path, step, snapshot or self.snapshot())
        self.checkpoints.last_step = step
        self.nonfinite.zero_()
        if self.info.enabled:
            dist.barrier()

    def _save_best(self, step: int, val: float) -> None:
        """Write the current state (step ``step``, val loss ``val``) as best.pt (FSDP: best.dcp), atomically."""
        path = self.checkpoints.best_path
        if self.checkpoints.writes_here:
            self.checkpoints.write(path, step, {**self.snapshot(), "best_val": val})
            self.print(f"step {step:>6} | new best val loss {val:.4f}: saved {path}")

    # -- one optimizer step ------------------------------------------------------------------------
    def _hessian_step(self, step: int, micro: list[tuple[int, torch.Tensor, torch.Tensor]]) -> float:
        """Estimate the curvature on a share of this step's micro-batches and fold it in; seconds taken."""
        n = max(1, round(self.cfg.optim.hess_fraction * self.cfg.train.batch_size))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        est = self.estimator
        model = self.model if est.plain_module else self.compiled_model
        # share = n / batch_size = the estimator's tokens / step tokens (GNB: Alg. 2 line 6's N in rho * bs)
        h_hat = est.estimate(model, [(j, x[:n], y[:n]) for j, x, y in micro], self.params, self.cfg.train.seed, step,
                             self.autocast, n / self.cfg.train.batch_size)
        update_curvature(self.optimizer, h_hat)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def _check_finite(self, step: int, loss: torch.Tensor | float) -> None:
        if not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"training diverged at step {step + 1}: the loss is {float(loss)}; {self.checkpoints.note()}. Lower "
                f"optim.lr, raise train.warmup_steps, keep train.grad_clip on, or set train.skip_nonfinite=true."
            )

    def _forward_backward(self, step: int, keep_inputs: bool) -> tuple[torch.Tensor, list]:
        """Gradients of this rank's micro-batches (mean loss); returns the loss and, if asked, the inputs."""
        loss_sum = torch.zeros((), device=self.device)
        micro_xs = []
        ddp = self.info.enabled and not self.fsdp  # FSDP reduce-scatters every micro-batch: no unsharded grads kept
        for micro in range(self.accum):
            j = self.info.rank * self.accum + micro  # global micro-batch index
            x, y = self.sampler.get("train", step, j)
            if keep_inputs:
                micro_xs.append((j, x, y))
            last = micro == self.accum - 1
            sync = contextlib.nullcontext() if (last or not ddp) else self.train_model.no_sync()
            with sync:
                with self.autocast:
                    _, loss = self.train_model(x, y)
                (loss / self.accum).backward()
            loss_sum += loss.detach()
        return loss_sum / self.accum, micro_xs

    def train_step(self, step: int, measure_update: bool = False) -> dict[str, Any]:
        """One optimizer step; returns tensors/values for logging (no host sync here).

        ``measure_update`` also reports the max and mean |delta theta| of this step (S3 paper Fig. 2).
        """
        t, opt = self.cfg.train, self.optimizer
        lr = lr_at(step, **schedule_args(self.cfg))
        for group in opt.param_groups:
            group["lr"] = lr
        hessian_now = self.estimator is not None and step % self.cfg.optim.hess_interval == 0
        loss, micro_xs = self._forward_backward(step, keep_inputs=hessian_now)
        out: dict[str, Any] = {"lr": lr, "loss": loss}
        norm = None
        if t.grad_clip > 0 or t.skip_nonfinite:  # the norm before any curvature hook (empirical Fisher reads .grad)
            norm = grad_norm([p.grad for p in self.params if p.grad is not None])
        finite = torch.isfinite(loss) & (torch.isfinite(norm) if norm is not None else True)
        if t.skip_nonfinite and not all_ranks_agree(finite, self.info):  # every rank skips the same steps
            opt.zero_grad(set_to_none=True)
            return {"lr": lr, "skipped": True}
        self.nonfinite |= ~finite  # remembered until the next save, which refuses a state that saw it
        if self.pending_save is not None:  # the previous step's state gave a loss and gradient: save it if finite
            pending, self.pending_save = self.pending_save, None
            self.save(*pending)
        if hessian_now:
            self._check_finite(step, loss)  # sampling labels from NaN logits would fail obscurely
            out["hessian_s"] = self._hessian_step(step, micro_xs)
        if t.grad_clip > 0:
            clip_grads_(self.params, t.grad_clip, norm)
            out["grad_norm"] = norm
            out["clipped"] = (norm > t.grad_clip).float()
        before = [p.detach().clone() for p in self.params] if measure_update else None
        optimizer_step(opt, self.tokens_per_step)
        opt.zero_grad(set_to_none=True)
        if before is not None:
            out.update(update_size(self.params, before))
        out.update(step_stats(opt))
        return out

    # -- the loop -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush the metric sinks and release the run folder (idempotent)."""
        self.logger.close()
        self.folder.release()

    def fit(self) -> dict[str, Any]:
        """Train from ``start_step`` to ``max_steps`` (or ``stop_after_step``); returns a summary."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict[str, Any]:
        t = self.cfg.train
        if t.eval_only:
            return eval_only(self)
        stop = t.stop_after_step or t.max_steps
        if self.start_step >= stop:
            return already_done(self)
        self._announce()
        mfu = self.model.flops_per_token() / self.info.world_size / self.peak_flops if self.peak_flops else None
        meter = StepMeter(self.device, self.tokens_per_step, t.grad_clip, t.skip_nonfinite, mfu, first_step_compiles=t.compile)
        self._t_start = t_start = time.perf_counter()
        signals = StopSignals(announce=self.info.is_main).install()
        try:
            step, final_val, skipped = self._loop(meter, stop, signals)
        finally:
            signals.restore()
        return finish(self, step, final_val, time.perf_counter() - t_start, skipped)

    def _loop(self, meter: StepMeter, stop: int, signals: StopSignals) -> tuple[int, float, int]:
        """The steps from ``start_step`` to ``stop``; returns (last step, final val loss, skipped steps)."""
        t = self.cfg.train
        step, final_val, skips_in_row, skipped = self.start_step, math.nan, 0, 0
        while step < stop:
            log_now = (step + 1) % t.log_interval == 0 or step + 1 == stop
            out = self.train_step(step, measure_update=t.log_update_stats and log_now)
            step += 1
            skips_in_row = self._note_skip(step, skips_in_row) if out.get("skipped") else 0
            skipped += bool(out.get("skipped"))
            meter.add(out)
            if log_now:
                self._log(meter, step, stop, out)
            if step % t.eval_interval == 0 or step == stop:
                final_val = self._eval(step)
                meter.restart_clock()  # keep eval time out of the throughput figures
            if step == stop:
                if not math.isfinite(final_val):
                    self.nonfinite.fill_(True)
                self.save(step)
            elif t.ckpt_interval and step % t.ckpt_interval == 0:
                self.pending_save = (step, self.snapshot())
            if step < stop and stop_vote(signals, self.control_group):
                self._stop_on_signal(step, signals.received or "a stop signal on another rank")
        return step, final_val, skipped

    def _stop_on_signal(self, step: int, signal_name: str) -> None:
        """Save the state after ``step`` (it supersedes a pending save), log ``stopped``, say how to resume."""
        self.pending_save = None
        self.save(step)
        self.logger.log("stopped", {"step": step, "signal": signal_name, "checkpoint": str(self.ckpt_path),
                                    "elapsed_s": self.elapsed()})
        again = (f"python -m sophia_train train.out_dir={shlex.quote(str(self.out_dir))} train.resume=true (the folder holds "
                 f"the run's config)" if not self.info.enabled else "the same torchrun command with train.resume=true")
        raise StoppedBySignal(
            f"stopped by {signal_name} after step {step}: its checkpoint {self.ckpt_path} (step {step}) is written. "
            f"Continue with {again}."
        )

    def _announce(self) -> None:
        """Banner lines, the start (or resume) record, and the initial evaluation of a new run."""
        cfg, changes = self.cfg, self.folder.changes
        for line in banner_lines(self):
            self.print(line)
        if self.resumed:  # one start row per run; each resume adds a resume row
            self.logger.log("resume", {"step": self.start_step, "changes": {k: list(v) for k, v in changes.items()}})
        else:
            self.logger.log("start", {"step": 0, "label": f"{cfg.model.name} {cfg.optim.name} lr={cfg.optim.lr:g}",
                                      "n_params": self.model.num_params(), "tokens_per_step": self.tokens_per_step,
                                      "world_size": self.info.world_size})
        if self.start_step == 0:
            v = self.evaluate()
            self.best_val = min(self.best_val, v)
            self.logger.log("eval", {"step": 0, "val_loss": v, "tokens": 0})
            self.print(f"step {0:>6} | val loss {v:.4f} (initial)")

    def _note_skip(self, step: int, skips_in_row: int) -> int:
        """Report a skipped step; stop the run after ``train.max_skips_in_row`` in a row."""
        skips_in_row += 1
        limit = self.cfg.train.max_skips_in_row
        self.print(f"step {step:>6}: loss or gradient norm not finite, step skipped ({skips_in_row} in a row)")
        if skips_in_row >= limit:
            raise TrainingDiverged(
                f"{skips_in_row} steps in a row up to step {step} had a NaN/inf loss or gradient norm and were skipped "
                f"(train.max_skips_in_row={limit}); {self.checkpoints.note()}. Lower optim.lr or raise train.warmup_steps."
            )
        return skips_in_row

    def _log(self, meter: StepMeter, step: int, stop: int, out: dict[str, Any]) -> None:
        """One ``train`` row and console line from the meter's window (one all-reduce, one host sync)."""
        means = meter.means()
        if "loss" in means:
            self._check_finite(step - 1, means["loss"])
        extra = {key: float(out[key]) for key in ("update_max", "update_mean") if key in out}
        h_norm = curvature_norm(self.optimizer)
        if h_norm is not None:
            extra["hessian_norm"] = float(h_norm)
        rec = meter.record(step, out["lr"], self.elapsed(), means, extra)
        self.logger.log("train", rec)
        self.print(meter.line(rec, self.cfg.train.max_steps, stop - step))
        meter.restart()
        meter.restart_clock()

    def _eval(self, step: int) -> float:
        """Evaluate, log and print; with ``train.keep_best`` save a new best as best.pt. Returns the val loss."""
        val = self.evaluate()
        if self.cfg.train.keep_best and val < self.best_val:
            self._save_best(step, val)
        self.best_val = min(self.best_val, val)
        self.logger.log("eval", {"step": step, "val_loss": val, "tokens": step * self.tokens_per_step, "elapsed_s": self.elapsed()})
        self.print(f"step {step:>6} | val loss {val:.4f} | best {self.best_val:.4f}")
        return val
