"""Metric sinks (console, JSONL, optional wandb) and throughput helpers (MFU with per-device peaks)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from sophia_train.atomic import atomic_write_text, describe_write_error
from sophia_train.errors import ConfigError

# Dense bf16 peak FLOP/s by device-name substring (vendor datasheets, without sparsity).
GPU_PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; PCIe parts are lower (756e12)
    "A100": 312e12,
    "A6000": 155e12,
    "A5000": 111e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10": 125e12,
    "V100": 125e12,
    "4090": 165e12,
    "3090": 71e12,
}


def peak_flops_for_name(name: str) -> float | None:
    """bf16 dense peak FLOP/s for a CUDA device name; None when the device is not in the table."""
    if "H100" in name and "PCIe" in name:
        return 756e12
    for key, peak in GPU_PEAK_FLOPS.items():
        if key in name:
            return peak
    return None


def device_peak_flops(device: torch.device) -> float | None:
    """bf16 dense peak of ``device`` if known; None on CPU or unknown GPUs (then no MFU is shown)."""
    if device.type != "cuda":
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device))


def format_duration(seconds: float) -> str:
    """``1h02m03s`` style duration."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class MetricsLogger:
    """Writes one JSON object per event to ``metrics.jsonl``, mirrors it to wandb when enabled."""

    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True, wandb_cfg: dict[str, Any] | None = None):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self._wandb = None
        self.checkpoint_note: Callable[[], str] = lambda: "The run's checkpoint was not touched"  # the trainer says which
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if wandb_cfg is not None:
            try:
                import wandb
            except ImportError:
                raise ConfigError("logger.wandb=true needs the wandb package: pip install wandb (or drop logger.wandb=true).") from None
            self._wandb = wandb.init(**wandb_cfg)

    def log(self, kind: str, record: dict[str, Any]) -> None:
        """Append ``{"kind": kind, **record}`` to the JSONL file (and wandb)."""
        if not self.enabled:
            return
        row = {"kind": kind, **{k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}}
        try:
            with open(self.path, "a") as f:  # append-only: a torn last line is dropped when the run resumes
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise ConfigError(
                f"could not append to {self.path}: {describe_write_error(e)}. {self.checkpoint_note()}; free space or "
                f"fix the folder, then continue with train.resume=true (the rows after that checkpoint are rewritten)."
            ) from None
        if self._wandb is not None:
            step = row.get("step")
            self._wandb.log({f"{kind}/{k}": v for k, v in row.items() if k not in ("kind", "step") and isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        """Finish the wandb run, if any."""
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (a torn last line is skipped)."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def open_run_log(cfg: Any, out_dir: Path, resumed_at: int | None, enabled: bool) -> MetricsLogger:
    """The run's metrics sink: ``metrics.jsonl`` (a resumed run keeps the rows up to its step, a new run
    starts it afresh), ``config.yaml``, and wandb when ``logger.wandb`` is on. Rank 0 only writes."""
    if enabled:
        metrics = out_dir / "metrics.jsonl"
        if resumed_at is not None and metrics.exists():  # drop rows logged after the checkpoint we resume from
            keep = [r for r in read_metrics(metrics) if r.get("step", 0) <= resumed_at]
            atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in keep))
        elif resumed_at is None and metrics.exists():
            metrics.unlink()
        atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    wandb_cfg = None
    lc = cfg.logger
    if lc.wandb and enabled:
        wandb_cfg = dict(
            project=lc.wandb_project, name=lc.wandb_run_name or cfg.run_name, dir=str(out_dir),
            config=OmegaConf.to_container(OmegaConf.structured(cfg)), resume="allow", id=None,
        )
    return MetricsLogger(out_dir, enabled=enabled, wandb_cfg=wandb_cfg)
