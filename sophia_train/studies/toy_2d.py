"""Two-dimensional optimizer demos: the Sophia paper's Figure 2 and the lecture's contour/saddle plots.

Every trajectory is produced by the project's real optimizer classes (or ``torch.optim``) stepping a
2-element tensor, so the pictures show the code that trains the GPTs. Sophia gets the exact Hessian
diagonal every step, as in the paper's toy (Eq. 4); Newton divides by the exact (signed) diagonal.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sophia_train.optim import Lion, SoftSignSGD, SophiaH
from sophia_train.plotting import _pyplot, save_figure

Loss = Callable[[torch.Tensor], torch.Tensor]


def sophia_toy_loss(t: torch.Tensor) -> torch.Tensor:
    """Sophia paper Fig. 2: L = 8(t1 - 1)^2 (1.3 t1^2 + 2 t1 + 1) + 1/2 (t2 - 4)^2 (sharp t1, flat t2)."""
    return 8 * (t[0] - 1) ** 2 * (1.3 * t[0] ** 2 + 2 * t[0] + 1) + 0.5 * (t[1] - 4) ** 2


def saddle_loss(t: torch.Tensor) -> torch.Tensor:
    """The lecture's saddle: L = x^2 - y^2 (+ a small quartic wall so that descent stays bounded)."""
    return t[0] ** 2 - t[1] ** 2 + 0.05 * t[1] ** 4


def beale_loss(t: torch.Tensor) -> torch.Tensor:
    """Beale's function, the lecture's long curved valley; minimum 0 at (3, 0.5)."""
    x, y = t[0], t[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _grad_and_hessian_diag(loss: Loss, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = theta.detach().clone().requires_grad_(True)
    g = torch.autograd.grad(loss(t), t, create_graph=True)[0]
    h = torch.stack([torch.autograd.grad(g[i], t, retain_graph=True)[0][i] for i in range(t.numel())])
    return g.detach(), h.detach()


def run_optimizer(loss: Loss, start, make_opt: Callable[[list[torch.Tensor]], torch.optim.Optimizer], steps: int,
                  hessian: bool = False) -> np.ndarray:
    """Trajectory (steps+1, 2) of an optimizer on ``loss`` from ``start``; ``hessian`` feeds the exact diagonal."""
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = make_opt([theta])
    path = [theta.detach().clone()]
    for _ in range(steps):
        g, h = _grad_and_hessian_diag(loss, theta)
        if hessian:
            opt.update_hessian({theta: h})
        theta.grad = g
        opt.step()
        path.append(theta.detach().clone())
    return torch.stack(path).numpy()


def run_newton(loss: Loss, start, lr: float, steps: int) -> np.ndarray:
    """Diagonal Newton, theta <- theta - lr * g / h (Eq. 3), with the signed exact diagonal."""
    theta = torch.tensor(start, dtype=torch.float64)
    path = [theta.clone()]
    for _ in range(steps):
        g, h = _grad_and_hessian_diag(loss, theta)
        theta = theta - lr * g / h
        path.append(theta.clone())
    return torch.stack(path).numpy()


def sophia_toy_trajectories(steps: int = 30, start=(0.3, 0.0)) -> dict[str, np.ndarray]:
    """The five methods of the paper's Fig. 2 (deterministic: GD, SignGD, Adam, Newton, Sophia)."""
    lr = 0.5
    return {
        "GD": run_optimizer(sophia_toy_loss, start, lambda p: torch.optim.SGD(p, lr=0.008), steps),
        "SignGD": run_optimizer(sophia_toy_loss, start, lambda p: Lion(p, lr=0.3 * lr, betas=(0.0, 0.0), weight_decay=0.0), steps),
        "Adam": run_optimizer(sophia_toy_loss, start, lambda p: torch.optim.Adam(p, lr=0.3 * lr, betas=(0.5, 0.9)), steps),
        "Newton": run_newton(sophia_toy_loss, start, lr=1.0, steps=steps),
        # Eq. (4): theta - lr * clip(g / max(h, eps), 1): Sophia-H with beta1 = beta2 = 0 and gamma = 1.
        "Sophia": run_optimizer(sophia_toy_loss, start,
                                lambda p: SophiaH(p, lr=lr, betas=(0.0, 0.0), rho=1.0, weight_decay=0.0, eps=1e-12), steps, hessian=True),
    }


def lecture_trajectories(loss: Loss, start, steps: int, sgd_lr: float = 0.01) -> dict[str, np.ndarray]:
    """The lecture's optimizers (torch.optim) plus Sophia, Lion and S3 from this project."""
    makers = {
        "SGD": (lambda p: torch.optim.SGD(p, lr=sgd_lr), False),
        "Momentum": (lambda p: torch.optim.SGD(p, lr=sgd_lr, momentum=0.9), False),
        "NAG": (lambda p: torch.optim.SGD(p, lr=sgd_lr, momentum=0.9, nesterov=True), False),
        "Adagrad": (lambda p: torch.optim.Adagrad(p, lr=0.3), False),
        "Adadelta": (lambda p: torch.optim.Adadelta(p, lr=1.0, rho=0.9), False),
        "RMSprop": (lambda p: torch.optim.RMSprop(p, lr=0.03), False),
        "Adam": (lambda p: torch.optim.Adam(p, lr=0.1), False),
        "Lion": (lambda p: Lion(p, lr=0.03, weight_decay=0.0), False),
        "S3": (lambda p: SoftSignSGD(p, lr=0.1, weight_decay=0.0), False),
        "Sophia": (lambda p: SophiaH(p, lr=0.1, betas=(0.9, 0.9), rho=0.5, weight_decay=0.0), True),
    }
    return {name: run_optimizer(loss, start, make, steps, hessian=hess) for name, (make, hess) in makers.items()}


def plot_trajectories(loss: Loss, paths: dict[str, np.ndarray], extent, out: str | Path, title: str, levels=30, log_levels=True,
                      minimum=None) -> Path:
    """Contour plot of ``loss`` over ``extent`` with each trajectory drawn on top; writes a PNG."""

    plt = _pyplot()
    (x0, x1), (y0, y1) = extent
    xs, ys = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    grid = torch.tensor(np.stack([xs, ys]), dtype=torch.float64)
    z = loss(grid).numpy()
    fig, ax = plt.subplots(figsize=(7.5, 6), dpi=120)
    if log_levels:
        zmin = z.min()
        ax.contour(xs, ys, np.log(z - zmin + 1e-3), levels=levels, cmap="Greys", linewidths=0.6)
    else:
        ax.contour(xs, ys, z, levels=levels, cmap="Greys", linewidths=0.6)
    for i, (name, path) in enumerate(paths.items()):
        p = np.clip(path, [x0 - 1, y0 - 1], [x1 + 1, y1 + 1])
        ax.plot(p[:, 0], p[:, 1], "-o", color=f"C{i % 10}", markersize=2.5, linewidth=1.3, label=name)
    if minimum is not None:
        ax.plot(*minimum, "k*", markersize=12, label="minimum")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("θ[1]")
    ax.set_ylabel("θ[2]")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/toy_2d.py``."""
    ap = argparse.ArgumentParser(description="Reproduce the Sophia paper's Figure 2 and the lecture's contour / saddle comparisons as PNGs.")
    ap.add_argument("--out", default="results/toy")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)
    paths = sophia_toy_trajectories(args.steps)
    for name, p in paths.items():
        print(f"fig2 {name:<7} end ({p[-1, 0]: .3f}, {p[-1, 1]: .3f})  loss {float(sophia_toy_loss(__import__('torch').tensor(p[-1]))):.4f}")
    print(plot_trajectories(sophia_toy_loss, paths, ((-1.0, 1.6), (-0.5, 5.0)), f"{args.out}/fig2_sophia_toy.png",
                            "Sophia paper Fig. 2: sharp θ[1], flat θ[2]", minimum=(1.0, 4.0)))
    contour = lecture_trajectories(beale_loss, (1.0, 1.4), 300, sgd_lr=0.002)
    print(plot_trajectories(beale_loss, contour, ((-0.5, 4.0), (-1.0, 2.0)), f"{args.out}/lecture_contours.png",
                            "Beale function: 300 steps from (1, 1.4)", minimum=(3.0, 0.5)))
    for name, p in contour.items():
        print(f"beale {name:<9} end ({p[-1, 0]: .3f}, {p[-1, 1]: .3f})")
    saddle = lecture_trajectories(saddle_loss, (-1.5, 1e-3), 120)
    print(plot_trajectories(saddle_loss, saddle, ((-2.0, 2.0), (-1.5, 4.0)), f"{args.out}/lecture_saddle.png",
                            "Saddle x² − y²: 120 steps from (−1.5, 0.001)", log_levels=False, levels=40))
