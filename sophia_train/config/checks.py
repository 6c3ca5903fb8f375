"""The range-check helpers every schema's ``check`` uses: one message shape for every refused value."""

from __future__ import annotations

import math
from typing import Any

from sophia_train.errors import ConfigError


def require(cond: bool, msg: str) -> None:
    """Raise ``ConfigError(msg)`` unless ``cond``."""
    if not cond:
        raise ConfigError(msg)


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def in_range(name: str, value: Any, lo: float, hi: float, lo_closed: bool = True, hi_closed: bool = False) -> None:
    """Refuse a ``value`` of the setting ``name`` that is not a number in the interval (NaN never is)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value >= lo if lo_closed else value > lo) and (value <= hi if hi_closed else value < hi)
    interval = f"{'[' if lo_closed else '('}{lo:g}, {'inf' if hi == math.inf else f'{hi:g}'}{']' if hi_closed else ')'}"
    require(ok, f"{name} must be a number in {interval}, got {value!r}.")



def check_curvature_hook(o: Any) -> None:
    """The curvature-hook fields Sophia and AdaHessian share: k >= 1, a fraction in (0, 1]. (The estimator's
    name is checked beside the registry of estimators: ``curvature.check_estimator``.)"""
    require(o.hess_interval >= 1, f"optim.hess_interval must be >= 1, got {o.hess_interval}.")
    in_range("optim.hess_fraction", o.hess_fraction, 0, 1, lo_closed=False, hi_closed=True)

