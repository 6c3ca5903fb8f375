"""The benchmark's PNGs: loss against budget per size (AdamW's fit drawn), speedup against model size per
budget, and the sensitivity of each optimizer around its Phase I point."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import ticker

from sophia_train.plotting import _pyplot, save_figure
from sophia_train.studies.benchmark.costs import SizeInfo
from sophia_train.studies.benchmark.profiles import Size
from sophia_train.studies.benchmark.tuning import at_anchor


def sensitivity_slice(points: list[dict], keys: list[str], key: str, best: dict) -> tuple[list[dict], str]:
    """The Phase I runs (at the anchor) that vary only ``key``: those with every other hyperparameter at
    ``best``; when fewer than two are (another hyperparameter moved after ``key``'s last line search),
    the latest line search over ``key``, and its other values as text (else "")."""
    anchor = at_anchor(points)
    rest = [k for k in keys if k != key]
    groups: dict[tuple, dict[float, dict]] = {}  # other values -> key value -> run
    asked: dict[tuple, int] = {}  # other values -> when a run with them was last asked for
    for i, p in enumerate(anchor):
        groups.setdefault(tuple(p.get(k) for k in rest), {})[p[key]] = p
        asked[tuple(p.get(k) for k in rest)] = i
    at_best = groups.get(tuple(best.get(k) for k in rest), {})
    searched = [g for g in groups.items() if len(g[1]) >= 2]
    if len(at_best) >= 2 or not searched:
        return sorted(at_best.values(), key=lambda p: p[key]), ""
    last = max(searched, key=lambda g: asked[g[0]])
    return sorted(last[1].values(), key=lambda p: p[key]), ", ".join(f"{k}={v:.3g}" for k, v in zip(rest, last[0]))


def plots(out: Path, rows: list[dict], fits: dict, infos: dict[str, SizeInfo], tried: dict, chosen: dict,
          batch: list[tuple[Size, int]] | None = None) -> list[Path]:
    """loss_vs_budget_<size>.png (fit drawn), speedup_vs_size.png, speedup_vs_batch.png (with a batch axis),
    sensitivity_<optim>.png; returns their paths."""
    written = [loss_vs_budget(out, rows, size, fit["data"]) for size, fit in fits.items()]
    if fits:
        written.append(speedup_vs_size(out, rows, list(fits), infos))
    if batch and len(batch) > 1:
        written.append(speedup_vs_batch(out, rows, batch))
    for optim, points in tried.items():
        if optim in chosen and (path := sensitivity(out, optim, points, next(iter(chosen[optim].values())))):
            written.append(path)
    return written


def loss_vs_budget(out: Path, rows: list[dict], size: str, fit) -> Path:
    """loss_vs_budget_<size>.png: each optimizer's final val loss (mean ± sd over seeds) against tokens, AdamW's fit dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for optim in sorted({r["optim"] for r in rows}):
        pts = [r for r in rows if r["size"] == size and r["optim"] == optim]
        ax.errorbar([r["tokens"] for r in pts], [r["loss"] for r in pts], yerr=[r["loss_sd"] for r in pts], marker="o",
                    capsize=3, label=optim)
    xs = np.geomspace(min(r["tokens"] for r in rows if r["size"] == size) / 1.5,
                      max(r["tokens"] for r in rows if r["size"] == size) * 2, 100)
    ax.plot(xs, fit(xs), "k--", lw=1, label=f"AdamW fit {fit.a:.3g}·D^-{fit.b:.3f} + {fit.c:.3f}")
    ax.set(xscale="log", xlabel="training tokens (budget)", ylabel="final val loss", title=f"{size}: loss at the end of training")
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # labelled minor ticks (2x10^5, 3x10^5, ...) overlap
    ax.legend(fontsize=7)
    return save_figure(fig, out / f"loss_vs_budget_{size}.png")


def speedup_vs_size(out: Path, rows: list[dict], sizes: list[str], infos: dict[str, SizeInfo]) -> Path:
    """speedup_vs_size.png: one panel per budget index, the interpolated data speedup against parameters."""
    plt = _pyplot()
    optims = sorted({r["optim"] for r in rows})
    n_budgets = min(len({r["steps"] for r in rows if r["size"] == size}) for size in sizes)
    fig, axes = plt.subplots(1, n_budgets, figsize=(3.6 * n_budgets, 3.6), squeeze=False, sharey=True)
    for i, ax in enumerate(axes[0]):
        steps_at = {size: sorted({r["steps"] for r in rows if r["size"] == size})[i] for size in sizes}
        for j, optim in enumerate(optims):
            if optim == "adamw":  # the reference: the line at 1
                continue
            pts = [r for size in sizes for r in rows if r["size"] == size and r["optim"] == optim and r["steps"] == steps_at[size]]
            pts = [r for r in pts if math.isfinite(r["data_interp"]) and r["data_interp"] > 0]
            xs, ys = [infos[r["size"]].n_params for r in pts], [r["data_interp"] for r in pts]
            color = f"C{j % 10}"
            ax.plot(xs, ys, color=color, lw=1, label=optim)
            _bound_markers(ax, xs, ys, pts, color)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="parameters", title=f"{'/'.join(str(steps_at[s]) for s in sizes)} steps")
        _parameter_axis(ax, [infos[s].n_params for s in sizes])
    axes[0][0].set_ylabel("data speedup over AdamW (interpolated)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: the panels are full
    fig.suptitle("speedup against model size, per budget (hollow triangles: only a bound is known)", fontsize=9)
    return save_figure(fig, out / "speedup_vs_size.png")


def speedup_vs_batch(out: Path, rows: list[dict], batch: list[tuple[Size, int]]) -> Path:
    """speedup_vs_batch.png: per optimizer, the final-loss difference to tuned AdamW (mean ± sd over seeds) and the
    interpolated data speedup against tokens per step, each batch at its own budget."""
    plt = _pyplot()
    at = {(r["size"], r["steps"], r["optim"]): r for r in rows}
    optims = sorted({r["optim"] for r in rows} - {"adamw"})
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for j, optim in enumerate(optims):
        pts = [(s.tokens_per_step, r) for s, t in batch if (r := at.get((s.name, t, optim)))]
        xs = [x for x, _ in pts]
        left.errorbar(xs, [r["delta"] for _, r in pts], yerr=[r["loss_sd"] for _, r in pts], marker="o", capsize=3,
                      color=f"C{j % 10}", label=optim)
        ys = [r["data_interp"] for _, r in pts]
        right.plot(xs, ys, color=f"C{j % 10}", lw=1, label=optim)
        _bound_markers(right, xs, ys, [r for _, r in pts], f"C{j % 10}")
    left.axhline(0.0, color="k", lw=0.8)
    right.axhline(1.0, color="k", lw=0.8)
    left.set(xscale="log", xlabel="tokens per step", ylabel="final val loss − AdamW's", title="loss difference (below 0: better)")
    right.set(xscale="log", yscale="log", xlabel="tokens per step", ylabel="data speedup over AdamW (interpolated)",
              title="data speedup (hollow triangle: a bound)")
    for ax in (left, right):
        ax.xaxis.set_major_locator(ticker.FixedLocator([s.tokens_per_step for s, _ in batch]))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%d"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    right.yaxis.set_major_locator(ticker.FixedLocator([0.125, 0.25, 0.5, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 8]))
    right.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    right.yaxis.set_minor_locator(ticker.NullLocator())
    right.legend(fontsize=7)
    fig.suptitle("against batch size (each batch re-tuned, at a budget that grows with it)", fontsize=9)
    return save_figure(fig, out / "speedup_vs_batch.png")


MARKER = {"=": "o", ">": "^", "<": "v"}  # a bound: AdamW's measured budgets do not reach X's loss


def _bound_markers(ax, xs: list[float], ys: list[float], rows: list[dict], color: str) -> None:
    """A filled circle where the interpolated speedup is known, a hollow triangle (up: at least, down: at most) where
    only a bound is."""
    for x, y, r in zip(xs, ys, rows):
        bound = r.get("data_interp_bound", "=")
        ax.plot([x], [y], marker=MARKER[bound], color=color, ms=6, mfc=color if bound == "=" else "none")


def _parameter_axis(ax, n_params: list[int]) -> None:
    """Ticks at the sizes' parameter counts (in M) on x, powers of 2 on y, no minor ticks."""
    ax.xaxis.set_major_locator(ticker.FixedLocator(n_params))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v / 1e6:.3g}M"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_major_locator(ticker.LogLocator(base=2))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())


def sensitivity(out: Path, optim: str, points: list[dict], best: dict) -> Path | None:
    """sensitivity_<optim>.png: final val loss against each tuned hyperparameter, the others at ``best``."""
    keys = sorted({k for p in points for k, v in p.items()  # the searched values; not seed_losses (a list per point)
                   if k not in ("size", "steps", "final_val") and isinstance(v, (int, float))})
    if not keys:
        return None
    width = max(5.0, 3.2 * len(keys))  # one panel alone still fits the title
    fig, axes = _pyplot().subplots(1, len(keys), figsize=(width, 3.3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        same, others = sensitivity_slice(points, keys, key, best)
        xs = [p[key] for p in same]
        ax.plot(xs, [min(p["final_val"], 1e3) for p in same], marker="o")
        ax.axvline(best[key], color="r", lw=0.8)
        ax.set(xscale="log", xlabel=key, ylabel="final val loss")
        ax.xaxis.set_major_locator(ticker.FixedLocator(sorted({*xs, best[key]})))  # the values tried, readable
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        if others:  # coordinate descent moved another hyperparameter after this one's last line search
            ax.set_title(textwrap.fill(f"at {others}", int(9 * width / len(keys))), fontsize=7)
    fig.suptitle(textwrap.fill(f"{optim}: sensitivity around the Phase I point (others fixed)", int(11 * width)), fontsize=9)
    return save_figure(fig, out / f"sensitivity_{optim}.png")
