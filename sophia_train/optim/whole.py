"""Under FSDP, an optimizer whose rule is not element-wise steps each parameter as a whole tensor.

torch's Adafactor keeps a factored second moment: the mean of g² over each matrix's rows and over its
columns. On dim-0 shards the column means need every rank's rows, and its in-place reductions are not
supported on DTensors. ``WholeTensorSteps`` runs such an optimizer's own ``step`` one parameter at a
time on the gathered parameter and gradient (``full_tensor``), then each rank keeps its shard of the
result: the update is the unsharded one exactly, at the cost of one whole parameter and gradient in
memory at a time. Its state is kept whole and identical on every rank (small for Adafactor: a row and
a column vector per matrix), so a sharded checkpoint holds it as a replicated tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sophia_train.distributed.parallel import is_sharded, like_param, local
from sophia_train.optim._common import evaluate_closure


class WholeTensorSteps:
    """Mixin before a ``torch.optim.Optimizer`` class: its ``step`` on whole tensors, one parameter at a time."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One update of every parameter with a gradient, each on its whole (gathered) tensor."""
        loss = evaluate_closure(closure)
        lists = [g["params"] for g in self.param_groups]
        try:
            for gi, params in enumerate(lists):
                for p in params:
                    if p.grad is None:
                        continue
                    target = p
                    if is_sharded(p):  # every rank gathers the same tensors in the same order
                        target = p.full_tensor()
                        target.grad = p.grad.full_tensor()
                        if p in self.state:
                            self.state[target] = self.state.pop(p)
                    for gj, group in enumerate(self.param_groups):
                        group["params"] = [target] if gj == gi else []
                    super().step()
                    if target is not p:
                        self.state[p] = self.state.pop(target)
                        local(p).copy_(like_param(target, p).to_local())
        finally:
            for group, params in zip(self.param_groups, lists):
                group["params"] = params
        return loss


def whole_tensor_class(cls: type) -> type:
    """``cls`` with ``WholeTensorSteps`` in front (for sharded parameters)."""
    return type(f"WholeTensor{cls.__name__}", (WholeTensorSteps, cls), {})
