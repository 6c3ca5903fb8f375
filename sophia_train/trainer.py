"""The training loop. One loop for every optimizer; curvature estimation is a hook it calls.

Order of one optimizer step (``step`` counts completed steps, 0-based while running):

    lr <- schedule(step)
    for each micro-batch of this rank: forward, backward (DDP syncs on the last one)
    if the optimizer takes curvature and step % k == 0:       # Sophia Alg. 3, line 7 (t mod k = 1)
        h_hat <- GNB on a subset of this step's micro-batches  # .grad untouched
        optimizer.update_hessian(h_hat)
    clip the global grad norm (real gradient only)
    optimizer.step()
    log / eval / checkpoint

A checkpoint is only written for a state that trains: its parameters and optimizer state are finite,
and so are every loss and gradient norm since the last checkpoint, including the loss and gradient of
the saved parameters themselves. So the checkpoint of step s is written by step s + 1, after its
forward/backward and before its update (the state is still exactly that of step s; the RNG state is
the one step s ended with); the last one right after the final evaluation.

With ``train.skip_nonfinite`` a step whose loss or gradient norm is NaN/inf is skipped before the
curvature hook and the update (the optimizer never sees it); ``max_skips_in_row`` in a row stop the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from . import checkpoint as ckpt
from .config import Config, ConfigError, TrainingDiverged, accum_per_rank, total_accum, validate
from .curvature import gnb_estimate, hutchinson_estimate
from .data import BatchSampler, open_dataset
from .distributed import DistInfo, all_reduce_mean_, init_process_group, pick_device
from .metrics import MetricsLogger, device_peak_flops, format_duration, read_metrics
from .model import GPT, GPTConfig
from .optim import build_optimizer, hessian_estimator, implementation
from .schedule import lr_at


def _pad(n: int, multiple: int) -> int:
    return n if multiple <= 1 else ((n + multiple - 1) // multiple) * multiple


def gpt_config(cfg: Config, dataset_vocab: int) -> GPTConfig:
    """The model shape of this run; the vocabulary comes from the dataset unless set explicitly."""
    m = cfg.model
    vocab = m.vocab_size if m.vocab_size is not None else _pad(dataset_vocab, m.pad_vocab_to)
    if vocab < dataset_vocab:
        raise ConfigError(
            f"model.vocab_size={vocab} is smaller than the vocabulary of dataset {cfg.data.name!r} ({dataset_vocab}); "
            f"leave model.vocab_size unset to take it from the data."
        )
    return GPTConfig(
        n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, block_size=m.block_size, vocab_size=vocab,
        dropout=m.dropout, bias=m.bias, attn_scale_by_layer=m.attn_scale_by_layer,
    )


class Trainer:
    """Builds every component from the config, checks inputs before heavy work, and runs ``fit``."""

    def __init__(self, cfg: Config, info: DistInfo | None = None):
        self.cfg = cfg
        self.info = info or DistInfo()
        t = cfg.train
        validate(cfg, self.info.world_size)
        self.device = pick_device(t.device, self.info)
        self.accum = accum_per_rank(total_accum(t), self.info.world_size)
        self.seq_len = t.seq_len or cfg.model.block_size
        self.out_dir = Path(t.out_dir)
        self.ckpt_path = self.out_dir / ckpt.CHECKPOINT_NAME

        # --- cheap checks first: data, model shape, run folder, checkpoint compatibility ----------
        self.dataset = open_dataset(cfg.data.dir, cfg.data.name, f"python scripts/prepare_data.py {cfg.data.name}")
        self.gpt_config = gpt_config(cfg, self.dataset.vocab_size)
        self.lock = None
        if self.info.is_main:  # one run per folder; the lock also proves the folder writable before any step
            self.lock = ckpt.RunFolderLock(ckpt.prepare_out_dir(self.out_dir)).acquire()
            for stale in ckpt.remove_stale_temp_files(self.out_dir):
                print(f"removed {stale.name}, a temp file left by a killed run", flush=True)
        self.resume_changes: dict[str, tuple[Any, Any]] = {}
        resume_state = self._check_out_dir()

        # --- device, process group, model -----------------------------------------------------------
        if t.threads:
            torch.set_num_threads(t.threads)
        init_process_group(self.info, self.device)
        self.ptdtype = self._pick_dtype()
        self.autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.ptdtype)
            if self.ptdtype != torch.float32
            else contextlib.nullcontext()
        )
        torch.manual_seed(t.seed)
        self.raw_model = GPT(self.gpt_config).to(self.device)
        self.optimizer = build_optimizer(self.raw_model, cfg.optim, self.device)
        self.estimator = hessian_estimator(cfg.optim)
        self.has_hessian_norm = callable(getattr(self.optimizer, "hessian_norm", None))
        self.start_step = 0
        self.last_saved_step: int | None = None  # step of the checkpoint on disk that this run wrote or resumed
        self.pending_save: tuple[int, dict[str, Any]] | None = None  # (step, its snapshot): written by the next step
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)  # a NaN/inf loss or grad norm since the last save
        self.best_val = math.inf
        self.elapsed_base = 0.0  # wall-clock seconds of training before this invocation (resumed runs)
        self._t_start = time.perf_counter()
        if resume_state is not None:
            self._restore(resume_state)
        self.fwd_model: nn.Module = torch.compile(self.raw_model) if t.compile else self.raw_model
        self.model: nn.Module = self.fwd_model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.fwd_model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.sampler = BatchSampler(self.dataset, self.seq_len, t.batch_size, t.seed, self.device)
        self.tokens_per_step = t.batch_size * total_accum(t) * self.seq_len
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self.peak_flops = device_peak_flops(self.device)
        self.logger = self._make_logger(resume_state is not None)

    # ------------------------------------------------------------------------------------------------
    def _check_out_dir(self) -> dict[str, Any] | None:
        """Refuse to overwrite an earlier run's checkpoint; load and vet the one to resume."""
        t = self.cfg.train
        if not t.resume:
            if self.ckpt_path.exists() and not t.overwrite:
                raise ConfigError(
                    f"{self.ckpt_path} already holds a checkpoint of an earlier run. Continue it with "
                    f"train.resume=true, replace it with train.overwrite=true, or choose another run_name / "
                    f"train.out_dir; it was left untouched."
                )
            return None
        state = ckpt.load_checkpoint(self.ckpt_path)
        saved = state.get("model_config", {})
        mine = dataclasses.asdict(self.gpt_config)
        if saved != mine:
            diff = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}" for k, v in mine.items() if saved.get(k) != v)
            raise ConfigError(
                f"the checkpoint {self.ckpt_path} belongs to another model ({state.get('model_name')}; {diff}). "
                f"Resume it with the model it was trained with, or start a new run in another train.out_dir; "
                f"the checkpoint was left untouched."
            )
        if state.get("optim_name") != self.cfg.optim.name:
            raise ConfigError(
                f"the checkpoint {self.ckpt_path} was trained with optim={state.get('optim_name')}, "
                f"not optim={self.cfg.optim.name}: its optimizer state cannot be reused. It was left untouched."
            )
        self.resume_changes = self._vet_resume_config(state.get("config", {}))
        return state

    def _vet_resume_config(self, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """The run-defining settings that differ from the checkpoint's; refuse any not in ``train.resume_allow``."""
        now = OmegaConf.to_container(OmegaConf.structured(self.cfg))
        allow = set(self.cfg.train.resume_allow)
        unknown = sorted(allow - ckpt.known_config_keys(now))
        if unknown:
            raise ConfigError(f"train.resume_allow names {', '.join(unknown)}, which are not config keys (e.g. optim.lr, train.max_steps).")
        changes = ckpt.config_changes(saved, now)
        refused = {k: v for k, v in changes.items() if k not in allow}
        if refused:
            diff = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in refused.items())
            raise ConfigError(
                f"train.resume=true continues the run in {self.out_dir}, but settings that define the run differ from its "
                f"checkpoint ({diff}). Put them back, start a new run in another train.out_dir, or accept them with "
                f"train.resume_allow=[{','.join(refused)}]; a changed optim.lr, train.warmup_steps, train.max_steps or "
                f"train.min_lr_ratio takes effect from the resumed step on the new schedule (the LR is a function of the "
                f"step and those four: a larger max_steps re-stretches the cosine, so the LR jumps up). The checkpoint "
                f"was left untouched."
            )
        return changes

    def _pick_dtype(self) -> torch.dtype:
        want = self.cfg.train.dtype
        if want == "auto":
            if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
                return torch.bfloat16
            return torch.float32
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[want]

    def _restore(self, state: dict[str, Any]) -> None:
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_step = int(state["step"])
        self.last_saved_step = self.start_step
        self.best_val = float(state.get("best_val", math.inf))
        self.elapsed_base = float(state.get("elapsed_s", 0.0))
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def _make_logger(self, resumed: bool) -> MetricsLogger:
        main = self.info.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            metrics = self.out_dir / "metrics.jsonl"
            if resumed and metrics.exists():  # drop rows logged after the checkpoint we resume from
                keep = [r for r in read_metrics(metrics) if r.get("step", 0) <= self.start_step]
                metrics.write_text("".join(json.dumps(r) + "\n" for r in keep))
            elif not resumed and metrics.exists():
                metrics.unlink()
            (self.out_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(self.cfg)))
        wandb_cfg = None
        lc = self.cfg.logger
        if lc.wandb and main:
            wandb_cfg = dict(
                project=lc.wandb_project, name=lc.wandb_run_name or self.cfg.run_name, dir=str(self.out_dir),
                config=OmegaConf.to_container(OmegaConf.structured(self.cfg)), resume="allow", id=None,
            )
        return MetricsLogger(self.out_dir, enabled=main, wandb_cfg=wandb_cfg)

    def print(self, *args) -> None:
        """Print on rank 0 only."""
        if self.info.is_main:
            print(*args, flush=True)

    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean val loss over ``eval_iters`` fixed batches (the same batches at every evaluation)."""
        t = self.cfg.train
        self.fwd_model.eval()
        total = torch.zeros(2, device=self.device, dtype=torch.float64)
        for i in range(self.info.rank, t.eval_iters, self.info.world_size):
            x, y = self.sampler.get("val", 0, i)
            with self.autocast:
                _, loss = self.fwd_model(x, y)
            total[0] += loss.double()
            total[1] += 1
        self.fwd_model.train()
        if self.info.enabled:
            import torch.distributed as dist

            dist.all_reduce(total)
        return float(total[0] / total[1])

    def elapsed(self) -> float:
        """Training wall-clock seconds, counting earlier invocations of a resumed run."""
        return self.elapsed_base + time.perf_counter() - self._t_start

    def _last_checkpoint(self) -> str:
        """Where the last good checkpoint is, for messages."""
        if self.last_saved_step is None:
            return "no checkpoint was written"
        return f"the last checkpoint ({self.ckpt_path}, step {self.last_saved_step}) is intact"

    @torch.no_grad()
    def _state_is_finite(self) -> bool:
        """Whether parameters, optimizer state and every loss / grad norm since the last save are finite
        (all ranks agree). Norms on device first, one host sync; an exact element check confirms a bad norm."""
        tensors = [p.detach() for p in self.params] + [
            v for st in self.optimizer.state.values() for v in st.values() if torch.is_tensor(v) and v.is_floating_point() and v.numel()
        ]
        norms = torch.stack([n.float() for n in torch._foreach_norm(tensors)]) if tensors else torch.zeros(1, device=self.device)
        bad = (~torch.isfinite(norms).all() | self.nonfinite).float().reshape(1)
        all_reduce_mean_([bad])
        if float(bad) == 0:
            return True
        if self.nonfinite or self.info.enabled:
            return False
        return all(bool(torch.isfinite(t).all()) for t in tensors)  # a norm can overflow where no element does

    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint records besides weights and optimizer state, as of now (RNG, clock, best val)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"rng": rng, "elapsed_s": self.elapsed(), "best_val": self.best_val}

    def save(self, step: int, snapshot: dict[str, Any] | None = None) -> None:
        """Write the full training state (rank 0) atomically; all ranks wait for it. A state that is not
        finite is never written: the run stops with the previous checkpoint untouched."""
        if not self._state_is_finite():
            raise TrainingDiverged(
                f"training diverged: the state after step {step} was not saved because its parameters or optimizer state, "
                f"or a loss or gradient norm since the last checkpoint (its own included), is NaN/inf; "
                f"{self._last_checkpoint()}. Lower optim.lr, raise train.warmup_steps, "
                f"keep train.grad_clip on, or set train.skip_nonfinite=true to skip rare bad steps."
            )
        if self.info.is_main:
            self._write_checkpoint(step, snapshot or self.snapshot())
        self.last_saved_step = step
        self.nonfinite.zero_()
        if self.info.enabled:
            import torch.distributed as dist

            dist.barrier()

    def _write_checkpoint(self, step: int, snapshot: dict[str, Any]) -> None:
        """The whole training state, written atomically (rank 0); a failed write keeps the previous file."""
        state = {
            "format_version": ckpt.FORMAT_VERSION,
            "step": step,
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "model_config": dataclasses.asdict(self.gpt_config),
            "model_name": self.cfg.model.name,
            "optim_name": self.cfg.optim.name,
            "config": OmegaConf.to_container(OmegaConf.structured(self.cfg)),
            **snapshot,
        }
        try:
            ckpt.save_checkpoint(state, self.ckpt_path)
        except OSError as e:
            why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise ConfigError(
                f"could not write the checkpoint of step {step} to {self.ckpt_path}: {why}. The partial file was removed "
                f"and {self._last_checkpoint()}; free space or fix the folder, then continue with train.resume=true."
            ) from None

    def _hessian_step(self, step: int, micro: list[tuple[int, torch.Tensor, torch.Tensor]]) -> float:
        """Estimate the curvature on a subset of this step's micro-batches and fold it in; seconds taken."""
        n = max(1, round(self.cfg.optim.hess_fraction * self.cfg.train.batch_size))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        seed = self.cfg.train.seed
        if self.estimator == "gnb":
            # GNB averaged over n of batch_size sequences of every micro-batch: N / bs = n / batch_size
            # (Alg. 2 line 6's N folded into Sophia-G's rho * bs; see curvature.py).
            scale = n / self.cfg.train.batch_size
            est = gnb_estimate(self.fwd_model, [(j, x[:n]) for j, x, _ in micro], self.params, seed, step, self.autocast, scale)
            self.optimizer.update_hessian(est)
        elif self.estimator == "hutchinson":  # double backward: plain module, never DDP or compiled
            est = hutchinson_estimate(self.raw_model, [(x[:n], y[:n]) for _, x, y in micro], self.params, seed, step, self.autocast)
            self.optimizer.update_hessian(est)
        elif self.estimator == "empirical_fisher":  # the real (rank-averaged, unclipped) gradient, squared
            self.optimizer.update_hessian()
        else:
            raise ConfigError(f"unknown curvature estimator {self.estimator!r}")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def _check_finite(self, step: int, loss: torch.Tensor | float) -> None:
        if not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"training diverged at step {step + 1}: the loss is {float(loss)}; {self._last_checkpoint()}. Lower "
                f"optim.lr, raise train.warmup_steps, keep train.grad_clip on, or set train.skip_nonfinite=true."
            )

    def train_step(self, step: int, measure_update: bool = False) -> dict[str, Any]:
        """One optimizer step; returns tensors/values for logging (no host sync here).

        ``measure_update`` also reports the max and mean |delta theta| of this step (S3 paper Fig. 2).
        """
        t, opt = self.cfg.train, self.optimizer
        lr = lr_at(step, self.cfg.optim.lr, t.warmup_steps, t.max_steps, t.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        k = getattr(self.cfg.optim, "hess_interval", 0)
        hessian_now = self.estimator is not None and step % k == 0
        loss_sum = torch.zeros((), device=self.device)
        micro_xs = []
        for micro in range(self.accum):
            j = self.info.rank * self.accum + micro  # global micro-batch index
            x, y = self.sampler.get("train", step, j)
            if hessian_now:
                micro_xs.append((j, x, y))
            last = micro == self.accum - 1
            sync = contextlib.nullcontext() if (last or not self.info.enabled) else self.model.no_sync()
            with sync:
                with self.autocast:
                    _, loss = self.model(x, y)
                (loss / self.accum).backward()
            loss_sum += loss.detach()
        out: dict[str, Any] = {"lr": lr, "loss": loss_sum / self.accum}
        norm = None
        if t.grad_clip > 0 or t.skip_nonfinite:  # the norm before any curvature hook (empirical Fisher reads .grad)
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if t.skip_nonfinite:
            finite = torch.isfinite(out["loss"]) & (torch.isfinite(norm) if norm is not None else True)
            if self.info.enabled:  # every rank skips the same steps
                flag = finite.float().reshape(1)
                all_reduce_mean_([flag])
                finite = flag == 1
            if not bool(finite):
                opt.zero_grad(set_to_none=True)
                return {"lr": lr, "skipped": True}
        self.nonfinite |= ~torch.isfinite(out["loss"])
        if norm is not None:
            self.nonfinite |= ~torch.isfinite(norm)
        if self.pending_save is not None:  # the previous step's state gave a loss and gradient: save it if finite
            pending, self.pending_save = self.pending_save, None
            self.save(*pending)
        if hessian_now:
            self._check_finite(step, loss_sum / self.accum)  # sampling labels from NaN logits would fail obscurely
            out["hessian_s"] = self._hessian_step(step, micro_xs)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, t.grad_clip, norm)
            out["grad_norm"] = norm
            out["clipped"] = (norm > t.grad_clip).float()
        before = [p.detach().clone() for p in self.params] if measure_update else None
        if getattr(opt, "takes_tokens_per_step", False):
            opt.step(bs=self.tokens_per_step)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if before is not None:
            with torch.no_grad():
                deltas = [(p.detach() - b).abs() for p, b in zip(self.params, before)]
                out["update_max"] = torch.stack([d.max() for d in deltas]).max()
                out["update_mean"] = sum(d.sum() for d in deltas) / sum(d.numel() for d in deltas)
        for key, v in getattr(opt, "last_stats", {}).items():
            out[key] = v
        return out

    # ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush the metric sinks and release the run folder (idempotent)."""
        self.logger.close()
        if self.lock is not None:
            self.lock.release()

    def fit(self) -> dict[str, Any]:
        """Train from ``start_step`` to ``max_steps`` (or ``stop_after_step``); returns a summary."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        stop = t.stop_after_step or t.max_steps
        if self.start_step >= stop:
            evals = [r for r in read_metrics(self.out_dir / "metrics.jsonl") if r["kind"] == "eval"] if self.info.is_main else []
            self.print(f"nothing to do: the run in {self.out_dir} is already at step {self.start_step} "
                       f"(train.max_steps={t.max_steps}{f', stop_after_step={t.stop_after_step}' if t.stop_after_step else ''}).")
            return {"step": self.start_step, "final_val_loss": evals[-1]["val_loss"] if evals else math.nan,
                    "best_val_loss": self.best_val, "already_done": True}
        n_params = self.raw_model.num_params()
        impl = f" ({implementation(self.optimizer)})" if implementation(self.optimizer) else ""
        self.print(
            f"model {cfg.model.name}: {n_params / 1e6:.2f}M parameters (non-embedding rule of nanoGPT) | "
            f"{self.gpt_config.n_layer}L/{self.gpt_config.n_head}H/{self.gpt_config.n_embd}d, vocab {self.gpt_config.vocab_size}"
        )
        self.print(
            f"optim {cfg.optim.name}{impl} lr {cfg.optim.lr:g} | data {cfg.data.name} ({self.dataset.tokenizer}, "
            f"{self.dataset.num_tokens['train']:,} train tokens) | {self.info.world_size} process(es) x "
            f"{self.accum} micro-batches x {t.batch_size} x {self.seq_len} = {self.tokens_per_step:,} tokens/step | "
            f"device {self.device} {str(self.ptdtype).replace('torch.', '')} | out {self.out_dir}"
        )
        if self.start_step:
            self.print(f"resuming from step {self.start_step} ({self.ckpt_path})")
        if self.resume_changes:
            changed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in self.resume_changes.items())
            self.print(f"settings changed on resume (train.resume_allow): {changed}; LR at step {self.start_step} "
                       f"{self._saved_lr_at(self.start_step):.3g} -> {lr_at(self.start_step, cfg.optim.lr, t.warmup_steps, t.max_steps, t.min_lr_ratio):.3g}")
            self.logger.log("resume", {"step": self.start_step, "changes": {k: list(v) for k, v in self.resume_changes.items()}})
        else:
            self.logger.log("start", {"step": 0, "label": f"{cfg.model.name} {cfg.optim.name} lr={cfg.optim.lr:g}",
                                      "n_params": n_params, "tokens_per_step": self.tokens_per_step,
                                      "world_size": self.info.world_size})
        if self.start_step == 0:
            v = self.evaluate()
            self.best_val = min(self.best_val, v)
            self.logger.log("eval", {"step": 0, "val_loss": v, "tokens": 0})
            self.print(f"step {0:>6} | val loss {v:.4f} (initial)")

        window: dict[str, Any] = {}
        n_window, clipped, hess_time, hess_count, skipped = 0, 0.0, 0.0, 0, 0
        skips_in_row = skipped_total = 0
        self._t_start = t_start = time.perf_counter()
        t_window = t_start
        ms_per_step = math.nan
        step = self.start_step
        final_val = math.nan
        while step < stop:
            log_now = (step + 1) % t.log_interval == 0 or step + 1 == stop
            out = self.train_step(step, measure_update=t.log_update_stats and log_now)
            step += 1
            n_window += 1
            if out.get("skipped"):
                skipped, skips_in_row, skipped_total = skipped + 1, skips_in_row + 1, skipped_total + 1
                self.print(f"step {step:>6}: loss or gradient norm not finite, step skipped ({skips_in_row} in a row)")
                if skips_in_row >= t.max_skips_in_row:
                    raise TrainingDiverged(
                        f"{skips_in_row} steps in a row up to step {step} had a NaN/inf loss or gradient norm and were "
                        f"skipped (train.max_skips_in_row={t.max_skips_in_row}); {self._last_checkpoint()}. Lower optim.lr or "
                        f"raise train.warmup_steps."
                    )
            else:
                skips_in_row = 0
            for key in ("loss", "grad_norm", "not_clipped_frac"):
                if key in out:
                    window[key] = window.get(key, 0) + out[key]
            if "clipped" in out:
                clipped = clipped + out["clipped"]
            if "hessian_s" in out:
                hess_time += out["hessian_s"]
                hess_count += 1
            if step % t.log_interval == 0 or step == stop:
                n_used = n_window - skipped  # every rank skips the same steps
                means = {}
                if window:
                    stats = torch.stack([torch.as_tensor(window[k], device=self.device, dtype=torch.float32).reshape(()) for k in window])
                    all_reduce_mean_([stats])
                    means = {k: float(v) / n_used for k, v in zip(window, stats.tolist())}
                    self._check_finite(step - 1, means["loss"])
                now = time.perf_counter()
                ms_per_step = (now - t_window) * 1000 / n_window
                tok_s = self.tokens_per_step * n_window / (now - t_window)
                eta = (stop - step) * ms_per_step / 1000
                rec = {"step": step, "tokens": step * self.tokens_per_step, "lr": out["lr"], "ms_per_step": ms_per_step,
                       "tokens_per_s": tok_s, "elapsed_s": self.elapsed(), **means}
                if t.grad_clip > 0 and n_used:
                    rec["grad_clip_rate"] = float(clipped) / n_used
                if t.skip_nonfinite:
                    rec["skipped_steps"] = skipped
                for key in ("update_max", "update_mean"):
                    if key in out:
                        rec[key] = float(out[key])
                if self.has_hessian_norm:
                    rec["hessian_norm"] = float(self.optimizer.hessian_norm())
                    if hess_count:
                        rec["hessian_s"] = hess_time / hess_count
                if self.peak_flops:
                    rec["mfu"] = self.raw_model.flops_per_token() * tok_s / self.info.world_size / self.peak_flops
                self.logger.log("train", rec)
                extra = ""
                if "grad_clip_rate" in rec:
                    extra += f" | clip {rec['grad_clip_rate']:.0%}"
                if "not_clipped_frac" in rec:
                    extra += f" | not-clipped {rec['not_clipped_frac']:.0%}"
                if "hessian_norm" in rec:
                    extra += f" | |h| {rec['hessian_norm']:.3g}"
                if "mfu" in rec:
                    extra += f" | mfu {rec['mfu']:.1%}"
                if skipped:
                    extra += f" | skipped {skipped}"
                loss_text = f"{means['loss']:.4f}" if "loss" in means else "n/a (all skipped)"
                self.print(
                    f"step {step:>6}/{t.max_steps} | loss {loss_text} | lr {out['lr']:.2e} | "
                    f"{ms_per_step:.1f} ms/step | {tok_s:,.0f} tok/s | ETA {format_duration(eta)}{extra}"
                )
                window, n_window, clipped, hess_time, hess_count, skipped = {}, 0, 0.0, 0.0, 0, 0
                t_window = time.perf_counter()
            if step % t.eval_interval == 0 or step == stop:
                final_val = self.evaluate()
                self.best_val = min(self.best_val, final_val)
                self.logger.log("eval", {"step": step, "val_loss": final_val, "tokens": step * self.tokens_per_step,
                                         "elapsed_s": self.elapsed()})
                self.print(f"step {step:>6} | val loss {final_val:.4f} | best {self.best_val:.4f}")
                t_window = time.perf_counter()  # keep eval time out of the throughput figures
            if step == stop:
                if not math.isfinite(final_val):
                    self.nonfinite.fill_(True)
                self.save(step)
            elif t.ckpt_interval and step % t.ckpt_interval == 0:
                self.pending_save = (step, self.snapshot())
        wall = time.perf_counter() - t_start
        trained = step - self.start_step
        summary = {
            "step": step, "final_val_loss": final_val, "best_val_loss": self.best_val, "wall_s": wall,
            "tokens_per_s": self.tokens_per_step * trained / wall if wall > 0 else math.nan,
        }
        if t.skip_nonfinite:
            summary["skipped_steps"] = skipped_total
        self.logger.log("end", summary)
        self.print(
            f"done: {trained} steps in {format_duration(wall)} | final val loss {final_val:.4f} | "
            f"{summary['tokens_per_s']:,.0f} tok/s overall | checkpoint {self.ckpt_path}"
        )
        if t.plot and self.info.is_main:
            from .plotting import plot_runs

            png = plot_runs([self.out_dir], self.out_dir / "loss_curve.png", title=f"{cfg.run_name}")
            self.print(f"loss curve: {png}")
        return summary

    def _saved_lr_at(self, step: int) -> float:
        """The LR the checkpoint's own schedule gave at ``step`` (for the resume notice)."""
        old = {k: v for k, (v, _) in self.resume_changes.items()}
        o, t = self.cfg.optim, self.cfg.train
        return lr_at(step, old.get("optim.lr", o.lr), old.get("train.warmup_steps", t.warmup_steps),
                     old.get("train.max_steps", t.max_steps), old.get("train.min_lr_ratio", t.min_lr_ratio))
