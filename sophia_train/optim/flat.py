"""Flat contiguous storage for a list of parameters, their gradients and optimizer state.

Used by the fused (Triton) optimizer path: one kernel launch then covers every parameter of a
param group. The parameters' ``.data`` and ``.grad`` are re-pointed at views of one buffer each, so
autograd accumulates gradients straight into the flat gradient buffer (``.grad`` is zeroed in place,
never set to None) and ``load_state_dict`` / DDP / grad clipping keep writing into the same memory.
Build the optimizer before wrapping the model in DDP or ``torch.compile``.

Which parameters have a gradient: the unfused paths skip a parameter whose ``.grad`` is None (no
weight decay, no moment update). Here ``.grad`` stays in the flat buffer, so ``FlatGroup.has_grad``
records it instead. Each ``.grad`` is an alias of its stretch of the buffer made with ``set_`` (not a
view), so it has a version counter of its own: autograd accumulating into it, an in-place write and an
assignment all mark the parameter as having a gradient; ``zero_grad(set_to_none=True)`` or
``.grad = None`` clear it. Kernels then run only over the stretches of the buffers that hold parameters
with a gradient (one stretch, the whole buffer, when every parameter has one).

Every parameter starts at a multiple of ``ALIGN`` elements and the buffers' length is one too: the
Triton JIT then sees 16-divisible sizes and emits 128-bit loads and stores (with an odd length it
falls back to scalar ones; ``bench/compile_kernels.py`` shows the difference), and each parameter
view stays aligned for cuBLAS. Padding elements stay zero in every buffer (no view covers them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sophia_train.distributed.parallel import is_sharded
from sophia_train.model import round_up
from sophia_train.optim._common import unfused_update
from sophia_train.optim.kernels import kernels

#: Element alignment of every parameter inside a flat buffer (GPT-2 shapes need no padding at all).
ALIGN = 64


def _alias(buf: torch.Tensor, offset: int, shape: torch.Size) -> torch.Tensor:
    """A tensor of ``shape`` over ``buf``'s memory from ``offset`` on, with a version counter of its own
    (a view would share ``buf``'s, and in-place writes to one parameter's gradient could not be told apart)."""
    t = torch.empty(0, dtype=buf.dtype, device=buf.device)
    return t.set_(buf.untyped_storage(), buf.storage_offset() + offset, shape)


@dataclass
class FlatGroup:
    """Parameters of one (param group, dtype, device) laid end to end, each aligned to ``ALIGN`` elements."""

    params: list[torch.Tensor]
    param_buf: torch.Tensor
    grad_buf: torch.Tensor
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    has_grad: list[bool] = field(default_factory=list)  # per parameter: a gradient since the last zero_grad
    grads: list[torch.Tensor] = field(default_factory=list)  # the ``.grad`` aliases into ``grad_buf``
    _versions: list[int] = field(default_factory=list)  # their version counters when last looked at

    @classmethod
    def build(cls, params: list[torch.Tensor], state_names: tuple[str, ...], state_dtype=torch.float32) -> "FlatGroup":
        """Move ``params`` (same dtype and device) into flat buffers; zero state buffers ``state_names``."""
        dtype, device = params[0].dtype, params[0].device
        offsets, pos = [], 0
        for p in params:
            offsets.append((pos, p.numel()))
            pos = round_up(pos + p.numel(), ALIGN)
        total = pos
        param_buf = torch.zeros(total, dtype=dtype, device=device)
        grad_buf = torch.zeros(total, dtype=dtype, device=device)
        for p, (o, n) in zip(params, offsets):
            param_buf[o : o + n].copy_(p.detach().reshape(-1))
        state = {k: torch.zeros(total, dtype=state_dtype, device=device) for k in state_names}
        group = cls(params, param_buf, grad_buf, state, offsets, [p.grad is not None for p in params])
        group.grads = [_alias(grad_buf, o, p.shape) for p, (o, _) in zip(params, offsets)]
        with torch.no_grad():
            for p, view, g in zip(params, group.views(param_buf), group.grads):
                if p.grad is not None:
                    g.copy_(p.grad)
                p.data = view
                p.grad = g
        group._versions = [g._version for g in group.grads]
        return group

    def stretches(self, mask: list[bool]) -> list[tuple[slice, int]]:
        """Contiguous stretches of the buffers covering the parameters where ``mask`` holds, each as
        ``(slice, elements that belong to parameters)``; neighbours merge, so an all-true mask gives one
        stretch over the whole buffer. Each stretch starts and ends on an ``ALIGN`` boundary."""
        out: list[tuple[slice, int]] = []
        for (o, n), on in zip(self.offsets, mask):
            if not on:
                continue
            stop = round_up(o + n, ALIGN)
            if out and out[-1][0].stop == o:
                out[-1] = (slice(out[-1][0].start, stop), out[-1][1] + n)
            else:
                out.append((slice(o, stop), n))
        return out

    @property
    def numel(self) -> int:
        """Elements that belong to parameters (the buffers' length minus the alignment padding)."""
        return sum(n for _, n in self.offsets)

    @property
    def padding(self) -> int:
        """Alignment padding elements in each buffer (always zero)."""
        return self.param_buf.numel() - self.numel

    def gather(self, values: dict[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One fp32 buffer of this layout holding ``values[p]`` for each parameter (zeros where absent)."""
        out = torch.zeros(self.param_buf.numel(), dtype=torch.float32, device=self.param_buf.device)
        for p, view in zip(self.params, self.views(out)):
            if p in values:
                view.copy_(values[p])
        return out

    def views(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views (parameter shapes) into a flat buffer of this group's layout."""
        return [buf[o : o + n].view_as(p) for p, (o, n) in zip(self.params, self.offsets)]

    def reattach_grads(self) -> None:
        """Point every ``.grad`` back at the flat gradient buffer (a caller may have replaced it or set it
        to None) and update ``has_grad``: a parameter has a gradient when its ``.grad`` was assigned or
        written (its version counter moved) since the last ``zero_grad``, none when ``.grad`` is None."""
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(self.params, self.grads)):
                if p.grad is None:
                    g.zero_()
                    self.has_grad[i] = False
                    p.grad = g
                elif p.grad is not g:
                    g.copy_(p.grad)
                    self.has_grad[i] = True
                    p.grad = g
                elif g._version != self._versions[i]:
                    self.has_grad[i] = True
                self._versions[i] = g._version

    def zero_grads(self, set_to_none: bool) -> None:
        """Zero the gradient buffer; ``set_to_none``: no parameter has a gradient until one is written."""
        self.grad_buf.zero_()  # the aliases' version counters are their own: this does not move them
        self.reattach_grads()
        if set_to_none:
            self.has_grad = [False] * len(self.params)


class FusedFlatMixin:
    """Flat-buffer bookkeeping for an ``Optimizer`` with a Triton path.

    A subclass sets ``_flat_state`` (its per-parameter state buffers, fp32) and calls
    ``_setup_fused(fused)`` at the end of ``__init__``; when the fused path is taken, ``self._flat``
    lists ``(param-group index, FlatGroup)`` and every ``self.state[p]`` holds views into the flat
    buffers plus one shared ``step`` counter. Group dicts are looked up by index at each use,
    because ``load_state_dict`` replaces them.
    """

    _flat_state: tuple[str, ...] = ()
    _flat: list[tuple[int, FlatGroup]]

    def _setup_fused(self, fused: bool | None, maximize: bool = False) -> None:
        TRITON_AVAILABLE, INTERPRET = kernels().TRITON_AVAILABLE, kernels().sophia.INTERPRET

        self._flat = []
        self.fused_fallback: str | None = None  # why fused=True could not be honoured (logged in the banner)
        params = [p for g in self.param_groups for p in g["params"]]
        if fused is not False and any(is_sharded(p) for p in params):
            # FSDP owns its shards' memory (it gathers from it): the flat buffers cannot take them over
            if fused:
                self.fused_fallback = "FSDP shards cannot move into the Triton path's flat buffers"
            return
        on_cuda = bool(params) and all(p.is_cuda for p in params)
        dtypes_ok = all(p.dtype in (torch.float32, torch.bfloat16) for p in params)
        if fused is None:
            fused = on_cuda and dtypes_ok and TRITON_AVAILABLE and not maximize
        elif fused:
            problems = [
                (not dtypes_ok, "fused=True supports float32 and bfloat16 parameters only"),
                (not TRITON_AVAILABLE, "fused=True needs the triton package"),
                (not (on_cuda or INTERPRET), "fused=True needs CUDA parameters (or TRITON_INTERPRET=1 for CPU testing)"),
                (maximize, "fused=True does not support maximize=True"),
            ]
            for bad, msg in problems:
                if bad:
                    raise ValueError(msg)
        if not fused:
            return
        for gi, group in enumerate(self.param_groups):
            by_kind: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                by_kind.setdefault((p.dtype, p.device), []).append(p)
            for ps in by_kind.values():
                fg = FlatGroup.build(ps, self._flat_state)
                self._point_state(fg, torch.tensor(0.0))
                self._flat.append((gi, fg))

    def _point_state(self, fg: FlatGroup, step: torch.Tensor) -> None:
        views = {name: fg.views(buf) for name, buf in fg.state.items()}
        for i, p in enumerate(fg.params):
            self.state[p] = {"step": step, **{name: v[i] for name, v in views.items()}}

    @property
    def fused(self) -> bool:
        """Whether the Triton path is in use."""
        return bool(self._flat)

    def flat_groups(self):
        """``(group dict, FlatGroup)`` pairs of the fused path, with gradients re-attached."""
        for gi, fg in self._flat:
            fg.reattach_grads()
            yield self.param_groups[gi], fg

    def fused_stretches(self):
        """For each stretch of parameters with a gradient: ``(group, params, grads, {state name: buffer}, padding)``,
        slices of the flat buffers a kernel updates in place (``padding``: alignment elements inside the
        stretch, always zero). Each group's shared step counter advances once its stretches are done."""
        for group, fg in self.flat_groups():
            for sl, n in fg.stretches(fg.has_grad):  # parameters without a gradient are left alone
                yield group, fg.param_buf[sl], fg.grad_buf[sl], {k: v[sl] for k, v in fg.state.items()}, sl.stop - sl.start - n
            self._count_step(fg)

    def flat_step(self, fused: Callable[..., Any], state_lists: Callable[[list[torch.Tensor]], list[list[torch.Tensor]]],
                  **kwargs: Any) -> list[Any]:
        """The one ``step`` skeleton of the flat-buffer optimizers (Sophia, Lion, S3): on the fused path
        ``fused(group, param, grad, state, padding)`` for each stretch of the flat buffers (``kernels()``
        provides the kernel), else, per group, the parameters with a gradient, their state buffers
        (``state_lists(params)``: one list per buffer) and the class's ``_update_per_tensor`` or
        ``_update_foreach`` (``foreach=False`` picks the first). Returns what the updates returned, in order."""
        out: list[Any] = []
        if self._flat:
            for group, param, grad, state, padding in self.fused_stretches():
                out.append(fused(group, param, grad, state, padding))
            return out
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            grads = [p.grad for p in params]
            if group.get("maximize"):
                grads = torch._foreach_neg(grads)
            out += unfused_update(group, self._update_per_tensor, self._update_foreach, params, grads, *state_lists(params),
                                  **kwargs)
        return out

    def _count_step(self, fg: FlatGroup) -> None:
        """Advance the step counter the group's parameters share (one tensor for all of them)."""
        self.state[fg.params[0]]["step"] += 1

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero gradients; the fused path zeroes its flat gradient buffer in place instead of dropping it
        (``set_to_none`` then means: no parameter has a gradient until autograd writes one)."""
        if not self._flat:
            return super().zero_grad(set_to_none)
        for _, fg in self._flat:
            fg.zero_grads(set_to_none)

    def state_dict(self) -> dict:
        """Standard layout; the fused path's views are copied out so a checkpoint holds only its own data."""
        sd = super().state_dict()
        if self._flat:
            sd["state"] = {k: {n: v.clone() for n, v in st.items()} for k, st in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load; the fused path copies the saved buffers (full precision) back into its flat storage."""
        raw = {k: dict(v) for k, v in state_dict["state"].items()} if self._flat else None
        super().load_state_dict(state_dict)
        if not self._flat:
            return
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        for _, fg in self._flat:
            step = torch.tensor(0.0)
            views = {name: fg.views(buf) for name, buf in fg.state.items()}
            for i, p in enumerate(fg.params):
                saved = raw.get(index[id(p)], {})
                for name, v in views.items():
                    if name in saved:
                        v[i].copy_(saved[name])
                if "step" in saved:
                    step.fill_(float(saved["step"]))
            self._point_state(fg, step)
