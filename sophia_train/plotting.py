"""Plots (PNG) from runs' ``metrics.jsonl``: loss curves and the Sophia paper's diagnostics."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import yaml

from sophia_train.atomic import atomic_savefig
from sophia_train.config.paper import PAPER_STEP_COST, PAPER_STEPS, PAPER_TOKENS_PER_STEP, paper_val_loss
from sophia_train.metrics import read_metrics

X_AXES = {"step": ("step", "optimizer step"), "tokens": ("tokens", "training tokens"), "time": ("elapsed_s", "wall-clock seconds")}


def _metrics_file(run: str | os.PathLike) -> Path:
    p = Path(run)
    return p / "metrics.jsonl" if p.is_dir() else p


def _label(run, rows, labels, i) -> str:
    if labels:
        return labels[i]
    start = next((r for r in rows if r["kind"] == "start"), {})
    return start.get("label") or Path(run).name


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_png: str | os.PathLike) -> Path:
    """Write ``fig`` to ``out_png`` (folders created), close it, return the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out)
    plt.close(fig)
    return out


def _x(row: dict, key: str, train_rows: dict[int, dict]):
    if key in row:
        return row[key]
    return train_rows.get(row["step"], {}).get(key, 0.0 if row["step"] == 0 else None)


def paper_endpoint(run: str | os.PathLike, x: str) -> tuple[str, float | None, float] | None:
    """``(label, x, loss)`` of the Sophia paper's Fig. 4 endpoint for a run's (model, optimizer), read from the
    run's ``config.yaml``; x is None where the paper gives no such coordinate (wall-clock without a Table 1 row)."""
    cfg_file = _metrics_file(run).parent / "config.yaml"
    if not cfg_file.exists():
        return None
    cfg = yaml.safe_load(cfg_file.read_text()) or {}
    model, optim = (cfg.get("model") or {}).get("name"), (cfg.get("optim") or {}).get("name")
    loss = paper_val_loss(model, optim)
    if loss is None:
        return None
    cost = PAPER_STEP_COST.get(model, {}).get(optim)
    coord = {"step": PAPER_STEPS, "tokens": PAPER_STEPS * PAPER_TOKENS_PER_STEP,
             "time": cost.step_s * PAPER_STEPS if cost else None}[x]
    return f"paper {model} {optim}: {loss:.3f}", coord, loss


def _mark_paper(ax, runs: Sequence[str | os.PathLike], x: str) -> None:
    seen = set()
    for i, run in enumerate(runs):
        end = paper_endpoint(run, x)
        if end is None or end[0] in seen:
            continue
        seen.add(end[0])
        label, coord, loss = end
        ax.axhline(loss, color=f"C{i % 10}", linestyle="--", linewidth=0.8, alpha=0.7)
        if coord is not None:
            ax.plot([coord], [loss], marker="*", markersize=11, color=f"C{i % 10}", linestyle="none", label=label)
        else:
            ax.plot([], [], color=f"C{i % 10}", linestyle="--", label=f"{label} (no Table 1 time)")


def plot_runs(runs: Sequence[str | os.PathLike], out_png: str | os.PathLike, title: str | None = None,
              labels: Sequence[str] | None = None, x: str = "step", val_only: bool = False, paper: bool = False) -> Path:
    """Val loss (markers) and train loss (thin) of each run against steps, tokens or wall-clock time; with
    ``paper``, the Sophia paper's Fig. 4 endpoint of each run's (model, optimizer) as a star and a dashed line."""
    plt = _pyplot()
    key, xlabel = X_AXES[x]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for i, run in enumerate(runs):
        rows = read_metrics(_metrics_file(run))
        label = _label(run, rows, labels, i)
        by_step = {r["step"]: r for r in rows if r["kind"] == "train"}
        color = f"C{i % 10}"
        train = [(_x(r, key, by_step), r["loss"]) for r in rows if r["kind"] == "train"]
        val = [(_x(r, key, by_step), r["val_loss"]) for r in rows if r["kind"] == "eval"]
        train = [p for p in train if p[0] is not None]
        val = [p for p in val if p[0] is not None]
        if train and not val_only:
            ax.plot(*zip(*train), color=color, alpha=0.45, linewidth=1.0, label=f"{label} train")
        if val:
            ax.plot(*zip(*val), color=color, marker="o", markersize=3, linewidth=1.6, label=f"{label} val" if not val_only else label)
    if paper:
        _mark_paper(ax, runs, x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title or "loss curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out_png)


def plot_diagnostics(runs: Sequence[str | os.PathLike], out_png: str | os.PathLike, labels: Sequence[str] | None = None) -> Path:
    """Paper Fig. 8 (share of clipped coordinates, ‖h‖) and Fig. 6a (grad-clip trigger rate) per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=110)
    panels = [("clipped share of coordinates (1 − not-clipped)", lambda r: 1 - r["not_clipped_frac"] if "not_clipped_frac" in r else None),
              ("‖h‖ (L2 norm of the Hessian EMA)", lambda r: r.get("hessian_norm")),
              ("grad-norm clipping trigger rate", lambda r: r.get("grad_clip_rate"))]
    for i, run in enumerate(runs):
        rows = [r for r in read_metrics(_metrics_file(run)) if r["kind"] == "train"]
        label = _label(run, read_metrics(_metrics_file(run)), labels, i)
        for ax, (_, get) in zip(axes, panels):
            pts = [(r["step"], get(r)) for r in rows if get(r) is not None]
            if pts:
                ax.plot(*zip(*pts), color=f"C{i % 10}", linewidth=1.2, label=label)
    for ax, (title, _) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    return save_figure(fig, out_png)


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/plot_runs.py``."""
    ap = argparse.ArgumentParser(description="Plot runs' loss curves (and optionally the paper's diagnostics) into PNGs.")
    ap.add_argument("runs", nargs="+", help="run folders (or metrics.jsonl files)")
    ap.add_argument("-o", "--out", default="loss_curves.png")
    ap.add_argument("--x", choices=sorted(X_AXES), default="step")
    ap.add_argument("--val-only", action="store_true")
    ap.add_argument("--title")
    ap.add_argument("--diagnostics", metavar="PNG", help="also plot clip share, ||h|| and grad-clip rate here")
    ap.add_argument("--paper", action="store_true", help="mark the Sophia paper's Fig. 4 endpoint (100K steps) of each "
                    "run's (model, optimizer): a star and a dashed line")
    args = ap.parse_args(argv)
    print(plot_runs(args.runs, args.out, title=args.title, x=args.x, val_only=args.val_only, paper=args.paper))
    if args.diagnostics:
        print(plot_diagnostics(args.runs, args.diagnostics))
