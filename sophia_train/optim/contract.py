"""What the training loop may ask of an optimizer beyond ``torch.optim.Optimizer``, declared once.

The loop only ever calls the four functions below; an optimizer opts in by inheriting
``CurvatureOptimizer`` (and setting ``takes_tokens_per_step`` when its ``step`` takes ``bs``). Plain
``torch.optim`` classes need nothing: they get a plain ``step()`` and report no statistics.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class CurvatureOptimizer:
    """An optimizer with a diagonal-curvature EMA the loop refreshes every ``hess_interval`` steps.

    ``update_hessian(estimates)`` folds ``{param: h_hat}`` in (None: build it from ``.grad``, the
    official Sophia convention and the empirical-Fisher ablation); ``hessian_norm()`` is ‖h‖ (Fig. 8);
    ``last_stats`` holds tensors the loop logs, refreshed by every ``step`` (e.g. ``not_clipped_frac``).
    """

    #: ``step(bs=...)`` takes the tokens of one optimizer step (Sophia-G's rho * bs denominator).
    takes_tokens_per_step: bool = False
    last_stats: dict[str, torch.Tensor]

    def update_hessian(self, hessian_estimates: Mapping[torch.Tensor, torch.Tensor] | None = None) -> None:
        raise NotImplementedError

    def hessian_norm(self) -> torch.Tensor:
        raise NotImplementedError


def optimizer_step(opt: torch.optim.Optimizer, tokens_per_step: int) -> None:
    """One ``step`` with what the optimizer declares it takes."""
    if isinstance(opt, CurvatureOptimizer) and opt.takes_tokens_per_step:
        opt.step(bs=tokens_per_step)
    else:
        opt.step()


def step_stats(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The tensors the last ``step`` left for the log (none for plain optimizers)."""
    return dict(getattr(opt, "last_stats", {})) if isinstance(opt, CurvatureOptimizer) else {}


def curvature_norm(opt: torch.optim.Optimizer) -> torch.Tensor | None:
    """‖h‖ of an optimizer with a curvature EMA, else None."""
    return opt.hessian_norm() if isinstance(opt, CurvatureOptimizer) else None


def update_curvature(opt: torch.optim.Optimizer, estimates: Mapping[torch.Tensor, torch.Tensor] | None) -> None:
    """Fold a curvature estimate in; a clear error for an optimizer that keeps none."""
    if not isinstance(opt, CurvatureOptimizer):
        raise TypeError(f"{type(opt).__name__} keeps no curvature estimate: choose an optimizer with optim.estimator")
    opt.update_hessian(estimates)
