"""What a run says about itself: the banner at its start (model, optimizer and its implementation, data, parallel
layout, batch in tokens, and on a resume what changed), and how ``fit`` ends: the end record, the closing line
and the loss-curve PNG, or the answer of an eval-only or already-finished invocation."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from sophia_train.config.paper import paper_comparison, paper_val_loss
from sophia_train.distributed.threads import describe
from sophia_train.metrics import format_duration, read_metrics
from sophia_train.optim import implementation
from sophia_train.plotting import plot_runs
from sophia_train.schedule import lr_at, schedule_args


def banner_lines(tr: Any) -> list[str]:
    """The lines rank 0 prints before the first step of ``tr`` (a ``Trainer``)."""
    cfg, t, g = tr.cfg, tr.cfg.train, tr.gpt_config
    impl = f" ({implementation(tr.optimizer)})" if implementation(tr.optimizer) else ""
    lines = [
        f"model {cfg.model.name}: {tr.model.num_params() / 1e6:.2f}M parameters (non-embedding rule of nanoGPT) | "
        f"{g.n_layer}L/{g.n_head}H/{g.n_embd}d, vocab {g.vocab_size}",
        f"optim {cfg.optim.name}{impl} lr {cfg.optim.lr:g} | data {cfg.data.name} ({tr.dataset.tokenizer}, "
        f"{tr.dataset.num_tokens['train']:,} train tokens) | {parallel_note(tr)}{tr.info.world_size} process(es){backend_note(tr)} x "
        f"{tr.accum} micro-batches x {t.batch_size} x {tr.seq_len} = {tr.tokens_per_step:,} tokens/step | "
        f"device {tr.device} {str(tr.ptdtype).replace('torch.', '')}{compile_note(tr)} | out {tr.out_dir}",
        describe(tr.threads),
    ]
    if tr.start_step:
        lines.append(f"resuming from step {tr.start_step} ({tr.ckpt_path})")
    elif cfg.init_from:
        lines.append(f"weights initialised from init_from={cfg.init_from} (optimizer state fresh)")
    changes = tr.folder.changes
    if changes:
        changed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        new_lr = lr_at(tr.start_step, **schedule_args(cfg))
        old_lr = lr_at(tr.start_step, **schedule_args(cfg, {k: a for k, (a, _) in changes.items()}))
        lines.append(f"settings changed on resume (train.resume_allow): {changed}; LR at step {tr.start_step} "
                     f"{old_lr:.3g} -> {new_lr:.3g}")
    return lines


def backend_note(tr: Any) -> str:
    """`` (nccl)`` / `` (gloo)`` when the run has a process group of several ranks."""
    return f" ({dist.get_backend()})" if tr.info.enabled and dist.is_initialized() else ""


def compile_note(tr: Any) -> str:
    """Which form of ``torch.compile`` runs (with ``train.compile``): whole model, around DDP, or per block under FSDP."""
    if not tr.cfg.train.compile:
        return ""
    if tr.fsdp:
        return " | compiled per block (inside FSDP)"
    if tr.info.enabled:
        return " | compiled around DDP (all-reduce overlaps the backward)"
    return " | compiled (whole model)"


def parallel_note(tr: Any) -> str:
    """``fsdp (...) | `` when parameters are sharded: shards, precision, where Hutchinson runs."""
    if not tr.fsdp:
        return ""
    mp = f"{str(tr.ptdtype).replace('torch.', '')} compute, fp32 master weights and reduction" if tr.ptdtype != torch.float32 else "fp32"
    hutch = "; Hutchinson on a gathered replica" if tr.estimator is not None and tr.estimator.plain_module else ""
    return f"fsdp ({tr.info.world_size} shards per tensor, {mp}{hutch}) | "


def eval_only(tr: Any) -> dict[str, Any]:
    """``train.eval_only``: train and val loss of the loaded weights, printed; nothing is written."""
    source = (f"checkpoint {tr.ckpt_path} (step {tr.start_step})" if tr.resumed
              else f"init_from={tr.cfg.init_from}" if tr.cfg.init_from else "a freshly initialised model")
    train_loss, val_loss = tr.evaluate("train"), tr.evaluate("val")
    tr.print(f"eval_only: {source} | train loss {train_loss:.4f} | val loss {val_loss:.4f} "
             f"({tr.cfg.train.eval_iters} batches of {tr.cfg.train.batch_size} x {tr.seq_len} tokens each)")
    return {"step": tr.start_step, "train_loss": train_loss, "val_loss": val_loss, "eval_only": True}


def already_done(tr: Any) -> dict[str, Any]:
    """Resuming a run that already reached its last step: say so, change nothing."""
    t = tr.cfg.train
    evals = [r for r in read_metrics(tr.out_dir / "metrics.jsonl") if r["kind"] == "eval"] if tr.info.is_main else []
    stop_note = f", stop_after_step={t.stop_after_step}" if t.stop_after_step else ""
    tr.print(f"nothing to do: the run in {tr.out_dir} is already at step {tr.start_step} (train.max_steps={t.max_steps}{stop_note}).")
    return {"step": tr.start_step, "final_val_loss": evals[-1]["val_loss"] if evals else math.nan,
            "best_val_loss": tr.best_val, "already_done": True}


def finish(tr: Any, step: int, final_val: float, wall: float, skipped: int) -> dict[str, Any]:
    """The ``end`` record, the closing line and the loss-curve PNG."""
    trained = step - tr.start_step
    summary = {"step": step, "final_val_loss": final_val, "best_val_loss": tr.best_val, "wall_s": wall,
               "tokens_per_s": tr.tokens_per_step * trained / wall if wall > 0 else math.nan}
    if tr.cfg.train.skip_nonfinite:
        summary["skipped_steps"] = skipped
    cfg = tr.cfg
    if cfg.reference == "sophia_paper" and paper_val_loss(cfg.model.name, cfg.optim.name) is not None:
        summary["paper_val_loss"] = paper_val_loss(cfg.model.name, cfg.optim.name)
    tr.logger.log("end", summary)
    tr.print(f"done: {trained} steps in {format_duration(wall)} | final val loss {final_val:.4f} | "
             f"{summary['tokens_per_s']:,.0f} tok/s overall | checkpoint {tr.ckpt_path}")
    if cfg.reference == "sophia_paper":
        tr.print(paper_comparison(cfg.model.name, cfg.optim.name, final_val, step, cfg.data.name, tr.tokens_per_step))
    if tr.cfg.train.plot and tr.info.is_main:
        png = plot_runs([tr.out_dir], tr.out_dir / "loss_curve.png", title=f"{tr.cfg.run_name}")
        tr.print(f"loss curve: {png}")
    return summary
