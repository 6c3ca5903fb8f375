"""Speedup over AdamW as the Sophia paper and Wen et al. (2025, "Fantastic Pretraining Optimizers")
define it: the data AdamW would need to reach another optimizer's final loss, divided by the data
that optimizer used.

Per model size, AdamW's final loss at each token budget D (each run with its own full schedule) is
fit by the saturating power law ``L(D) = a * D**-b + c`` (``fit_power_law``: for each candidate
floor c between 0 and the smallest loss, log(L - c) = log a - b log D is a straight line; the c with the
smallest squared error in L wins, refined by golden-section search). Inverting the fit gives
``D_AdamW(L) = (a / (L - c)) ** (1 / b)``, and the speedup of X at budget D is
``D_AdamW(L_X(D)) / D`` (``data_speedup``). The same with wall-clock seconds or FLOPs in place of
tokens gives the wall-clock and compute speedups; FLOPs count an optimizer's curvature-estimator work
(``compute_per_token``). A loss at or below AdamW's fitted floor c has no finite D_AdamW: its speedup
is reported as infinite (beyond what the fit can say). Where the power law fits poorly (small models
whose loss falls faster and faster in log D), ``interpolated_speedup`` reads D_AdamW off AdamW's
measured losses instead, between its budgets, and gives only a bound outside them. The paper's Sec. 3.2 verdict asks whether X with
half the budget reaches AdamW's loss at the full budget (``half_budget_verdict``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLaw:
    """``L(x) = a * x**-b + c`` fit to (x, L) points, with its residuals (L - fit) at the points."""

    a: float
    b: float
    c: float
    residuals: tuple[float, ...]

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.a * np.power(x, -self.b) + self.c

    def inverse(self, loss: float) -> float:
        """The x at which the fit reaches ``loss`` (inf at or below the floor c)."""
        if loss <= self.c:
            return math.inf
        return (self.a / (loss - self.c)) ** (1.0 / self.b)

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.residuals))))


def _line_fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[float, float, float]:
    """(a, b, squared error in L) of the best line log(y - c) = log a - b log x."""
    logx, logy = np.log(x), np.log(y - c)
    slope, intercept = np.polyfit(logx, logy, 1)
    a, b = float(np.exp(intercept)), float(-slope)
    err = float(np.sum((a * x ** -b + c - y) ** 2))
    return a, b, err


def fit_power_law(x: Sequence[float], loss: Sequence[float]) -> PowerLaw:
    """Fit ``L = a * x**-b + c`` (a > 0, b > 0, c below every loss, and c >= 0 when the losses are positive)
    to at least 3 points."""
    x, y = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    if len(x) < 3 or len(set(x.tolist())) < 3:
        raise ValueError(f"a power law with a floor needs losses at 3 or more budgets, got {len(set(x.tolist()))}")
    top = float(y.min()) - 1e-9 * max(1.0, abs(float(y.min())))
    grid = top - (float(y.max()) - float(y.min()) + 1.0) * np.concatenate([[0.0], np.logspace(-6, 2, 400)])
    if y.min() > 0:  # a cross-entropy floor is not negative: without this, losses that fall faster and faster
        grid = np.append(grid[grid > 0], 0.0)  # in log D send c to -infinity (b to 0), a meaningless log-linear fit
    errs = [_line_fit(x, y, c)[2] for c in grid]
    i = int(np.argmin(errs))
    lo, hi = grid[min(i + 1, len(grid) - 1)], grid[max(i - 1, 0)]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(200):  # golden-section search for the floor between the grid neighbours
        m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if _line_fit(x, y, m1)[2] <= _line_fit(x, y, m2)[2]:
            hi = m2
        else:
            lo = m1
    c = float(lo + hi) / 2
    a, b, _ = _line_fit(x, y, c)
    fit = PowerLaw(a, b, c, ())
    return PowerLaw(a, b, c, tuple(float(r) for r in y - fit(x)))


def data_speedup(adamw_fit: PowerLaw, loss: float, budget: float) -> float:
    """``D_AdamW(loss) / budget``: how many times the budget AdamW would need for ``loss`` (inf: beyond the fit)."""
    return adamw_fit.inverse(loss) / budget


def compute_per_token(flops_per_token: float, estimator_cost: float = 0.0, hess_fraction: float = 0.0,
                      hess_interval: int = 1) -> float:
    """Training FLOPs per token including a curvature estimator's work: the estimator runs on
    ``hess_fraction`` of the batch every ``hess_interval`` steps at ``estimator_cost`` times a training
    step's forward+backward (``curvature.ESTIMATORS[...].cost``)."""
    return flops_per_token * (1.0 + estimator_cost * hess_fraction / hess_interval)


@dataclass(frozen=True)
class Speedup:
    """Mean and sd over seeds of one optimizer's speedup at one (model size, budget)."""

    mean: float
    sd: float
    per_seed: tuple[float, ...]


def seed_speedups(adamw_fit: PowerLaw, losses: Sequence[float], cost: float) -> Speedup:
    """Speedup of each seed's final loss (``cost``: the tokens, seconds or FLOPs that seed used),
    as mean ± sd (sd 0 for one seed; inf when any seed is beyond the fit)."""
    values = [adamw_fit.inverse(loss) / cost for loss in losses]
    if any(math.isinf(v) for v in values):
        return Speedup(math.inf, math.nan, tuple(values))
    arr = np.asarray(values)
    return Speedup(float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, tuple(values))


@dataclass(frozen=True)
class Interpolated:
    """A speedup read off AdamW's measured losses rather than a fit: ``value`` when ``bound`` is "=", else
    a bound (">": X beat AdamW's largest budget; "<": X was worse than AdamW's smallest)."""

    value: float
    bound: str

    def __str__(self) -> str:
        return f"{self.value:.2f}" if self.bound == "=" else f"{self.bound} {self.value:.2f}"


def interpolated_speedup(budgets: Sequence[float], adamw_losses: Sequence[float], loss: float, budget: float) -> Interpolated:
    """Model-free speedup: the budget at which AdamW's measured mean losses reach ``loss``, read off the
    straight lines between them in (log D, L), over ``budget``. AdamW's losses are first made
    non-increasing in D (a larger budget is at least as good); outside their range only a bound is known."""
    order = np.argsort(np.asarray(budgets, dtype=float))
    b = np.asarray(budgets, dtype=float)[order]
    d = np.log(b)
    y = np.minimum.accumulate(np.asarray(adamw_losses, dtype=float)[order])
    if loss < y[-1]:
        return Interpolated(float(b[-1]) / budget, ">")
    if loss > y[0]:
        return Interpolated(float(b[0]) / budget, "<")
    i = int(np.nonzero(y <= loss)[0][0])  # the first budget at which AdamW is at least as good as ``loss``
    if i == 0 or y[i - 1] == y[i]:
        return Interpolated(float(b[i]) / budget, "=")
    t = (y[i - 1] - loss) / (y[i - 1] - y[i])
    return Interpolated(float(np.exp(d[i - 1] + t * (d[i] - d[i - 1]))) / budget, "=")


def half_budget_verdict(loss_x_at_half: float, loss_adamw_at_full: float) -> bool:
    """Sec. 3.2: whether X with half the budget is at least as good as AdamW with the whole budget."""
    return loss_x_at_half <= loss_adamw_at_full
