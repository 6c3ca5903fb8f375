"""Flat contiguous storage for a list of parameters, their gradients and optimizer state.

Used by the fused (Triton) optimizer path: one kernel launch then covers every parameter of a
param group. The parameters' ``.data`` and ``.grad`` are re-pointed at views of one buffer each, so
autograd accumulates gradients straight into the flat gradient buffer (``.grad`` is zeroed in place,
never set to None) and ``load_state_dict`` / DDP / grad clipping keep writing into the same memory.
Build the optimizer before wrapping the model in DDP or ``torch.compile``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FlatGroup:
    """Parameters of one (param group, dtype, device) laid end to end."""

    params: list[torch.Tensor]
    param_buf: torch.Tensor
    grad_buf: torch.Tensor
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    offsets: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def build(cls, params: list[torch.Tensor], state_names: tuple[str, ...], state_dtype=torch.float32) -> "FlatGroup":
        """Move ``params`` (same dtype and device) into flat buffers; zero state buffers ``state_names``."""
        dtype, device = params[0].dtype, params[0].device
        total = sum(p.numel() for p in params)
        param_buf = torch.empty(total, dtype=dtype, device=device)
        grad_buf = torch.zeros(total, dtype=dtype, device=device)
        offsets, pos = [], 0
        for p in params:
            n = p.numel()
            param_buf[pos : pos + n].copy_(p.detach().reshape(-1))
            offsets.append((pos, n))
            pos += n
        group = cls(params, param_buf, grad_buf, {k: torch.zeros(total, dtype=state_dtype, device=device) for k in state_names}, offsets)
        with torch.no_grad():
            for p, view, gview in zip(params, group.views(param_buf), group.views(grad_buf)):
                if p.grad is not None:
                    gview.copy_(p.grad)
                p.data = view
                p.grad = gview
        return group

    def views(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views (parameter shapes) into a flat buffer of this group's layout."""
        return [buf[o : o + n].view_as(p) for p, (o, n) in zip(self.params, self.offsets)]

    def reattach_grads(self) -> None:
        """Point every ``.grad`` back at the flat gradient buffer (after a caller replaced it)."""
        for p, gview in zip(self.params, self.views(self.grad_buf)):
            if p.grad is None or p.grad.data_ptr() != gview.data_ptr():
                if p.grad is not None:
                    gview.copy_(p.grad)
                else:
                    gview.zero_()
                p.grad = gview
