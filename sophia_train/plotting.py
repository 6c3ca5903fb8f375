"""Loss-curve plots (PNG) from one or more runs' ``metrics.jsonl``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .metrics import read_metrics


def _metrics_file(run: str | os.PathLike) -> Path:
    p = Path(run)
    return p / "metrics.jsonl" if p.is_dir() else p


def plot_runs(runs: Sequence[str | os.PathLike], out_png: str | os.PathLike, title: str | None = None, labels: Sequence[str] | None = None) -> Path:
    """Plot train (thin) and val (markers) loss against optimizer steps for each run into ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for i, run in enumerate(runs):
        rows = read_metrics(_metrics_file(run))
        start = next((r for r in rows if r["kind"] == "start"), {})
        label = labels[i] if labels else start.get("label") or Path(run).name
        train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
        val = [(r["step"], r["val_loss"]) for r in rows if r["kind"] == "eval"]
        color = f"C{i % 10}"
        if train:
            ax.plot(*zip(*train), color=color, alpha=0.45, linewidth=1.0, label=f"{label} train")
        if val:
            ax.plot(*zip(*val), color=color, marker="o", markersize=3, linewidth=1.6, label=f"{label} val")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title or "loss curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
