"""Fused Sophia kernels over flat 1-D buffers (one launch per buffer, whatever the model).

``sophia_step_``: one read of p, g, m, h and one write of p, m per element —
decoupled weight decay, m <- b1 m + (1 - b1) g, ratio = min(|m| / d, 1), p <- p - lr sign(m) ratio —
and the number of coordinates with ratio < 1, counted in the same pass (one atomic add per block).
The denominator d is Sophia-G's official ``scale * max(h, 0) + eps`` or Sophia-H's Eq. (6)
``max(scale * h, eps)`` (``max(scale * sqrt(h), eps)`` for the AH+clip second moment).
``hessian_ema_``: h <- b2 h + (1 - b2) x (x squared for GNB gradients and the second moment;
as given for Hutchinson's u ⊙ (Hu) or a precomputed GNB estimate).

Math in fp32 whatever p's dtype (fp32 or bf16); m and h are fp32. Division and square root are
IEEE round-to-nearest (``div_rn``, ``sqrt_rn``), as in torch: Triton's defaults on NVIDIA GPUs are
approximate (``div.full``, ``sqrt.approx.ftz``); exact rounding costs instructions, not memory
traffic, which bounds this kernel. lr, wd and the betas are runtime scalars, so a changing learning
rate never recompiles. No autotuning: the block size is fixed (an
autotuned in-place kernel would corrupt p and m while it times candidates unless it restored them).
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl

    TRITON_AVAILABLE = True
except ImportError:  # the foreach path still works
    TRITON_AVAILABLE = False

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
#: Names of the denominators ``sophia_step_`` knows, in the kernel's numbering.
DENOMINATORS = ("official", "max", "max_sqrt")
#: Compile options of every launch. FMA contraction is chosen explicitly: triton 3.9 enables it by
#: default with a warning, and 3.10 turns the default off; pinning it keeps results across versions.
LAUNCH_OPTIONS = {"enable_fp_fusion": True}
#: Elements per launch at most: offsets are 32-bit inside the kernels, so longer buffers (a >2B-parameter
#: group) are processed in slices of this size (a multiple of every block size and of 16).
MAX_LAUNCH_ELEMENTS = 1 << 30
# Large blocks make the CPU interpreter fast (it runs a block as one numpy op); 1024 suits GPUs.
BLOCK_SIZE = 65536 if INTERPRET else 1024

if TRITON_AVAILABLE:

    @triton.jit
    def _round_to_bf16(x):
        # Round-to-nearest-even onto the bf16 grid, done on the bits so that the GPU and the CPU
        # interpreter (whose own fp32 -> bf16 cast truncates) store the same values as torch does.
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _sophia_step_kernel(p_ptr, g_ptr, m_ptr, h_ptr, count_ptr, n_elements, lr, wd, beta1, scale, eps,
                            CLIP: tl.constexpr, DENOM: tl.constexpr, BF16: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elements
        p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=mask, other=0.0)
        h = tl.load(h_ptr + offs, mask=mask, other=0.0)
        p = p * (1.0 - lr * wd)
        m = beta1 * m + (1.0 - beta1) * g
        if DENOM == 0:
            d = scale * tl.maximum(h, 0.0) + eps
        elif DENOM == 1:
            d = tl.maximum(scale * h, eps)
        else:
            d = tl.maximum(scale * tl.sqrt_rn(h), eps)
        ratio = tl.div_rn(tl.abs(m), d)  # IEEE division, as torch's; the default is approximate on GPUs
        if CLIP:
            ratio = tl.minimum(ratio, 1.0)
        sign = tl.where(m > 0, 1.0, tl.where(m < 0, -1.0, 0.0))
        p = p - lr * sign * ratio
        if BF16:
            p = _round_to_bf16(p)
        tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        not_clipped = tl.sum(tl.where(mask & (ratio < 1.0), 1, 0), axis=0)
        tl.atomic_add(count_ptr, not_clipped.to(tl.int64))  # int64: a launch counts < 2^30, a model may count more

    @triton.jit
    def _hessian_ema_kernel(h_ptr, x_ptr, n_elements, beta2, SQUARE: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elements
        h = tl.load(h_ptr + offs, mask=mask, other=0.0)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if SQUARE:
            x = x * x
        tl.store(h_ptr + offs, beta2 * h + (1.0 - beta2) * x, mask=mask)


def _check(*tensors: torch.Tensor) -> int:
    if not TRITON_AVAILABLE:
        raise RuntimeError("the fused Sophia path needs the triton package (pip install triton)")
    n = tensors[0].numel()
    for t in tensors:
        if t.dim() != 1 or not t.is_contiguous() or t.numel() != n or t.device != tensors[0].device:
            raise ValueError("fused kernels take contiguous 1-D buffers of one size on one device")
    return n


def launch(kernel, buffers: tuple[torch.Tensor, ...], pointers: tuple, scalars: tuple, **constexprs) -> None:
    """Run ``kernel(*buffers, *pointers, n, *scalars)`` over the flat ``buffers`` in slices of ``MAX_LAUNCH_ELEMENTS``."""
    n = _check(*buffers)
    for start in range(0, n, MAX_LAUNCH_ELEMENTS):
        size = min(MAX_LAUNCH_ELEMENTS, n - start)
        kernel[(triton.cdiv(size, BLOCK_SIZE),)](*(b[start : start + size] for b in buffers), *pointers, size, *scalars,
                                                 BLOCK=BLOCK_SIZE, **constexprs, **LAUNCH_OPTIONS)


def sophia_step_(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, h: torch.Tensor, count: torch.Tensor, *,
                 lr: float, wd: float, beta1: float, scale: float, eps: float, clip: bool = True,
                 denominator: str = "official") -> None:
    """One fused Sophia update of flat buffers in place; adds the not-clipped count to ``count`` (int64[1]).

    ``denominator``: ``"official"`` (Sophia-G), ``"max"`` (Sophia-H) or ``"max_sqrt"`` (AH+clip), see above.
    """
    if denominator not in DENOMINATORS:
        raise ValueError(f"denominator must be one of {DENOMINATORS}, got {denominator!r}")
    _check(p, g, m, h)
    if m.dtype != torch.float32 or h.dtype != torch.float32:
        raise ValueError("m and h must be float32")
    if p.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"fused Sophia supports float32 and bfloat16 parameters, not {p.dtype}")
    if count.dtype != torch.int64 or count.numel() != 1:
        raise ValueError("count must be a one-element int64 tensor")
    launch(_sophia_step_kernel, (p, g, m, h), (count,), (float(lr), float(wd), float(beta1), float(scale), float(eps)),
           CLIP=clip, DENOM=DENOMINATORS.index(denominator), BF16=p.dtype == torch.bfloat16)


def hessian_ema_(h: torch.Tensor, x: torch.Tensor, *, beta2: float, square: bool) -> None:
    """``h <- beta2 h + (1 - beta2) x`` (``x * x`` when ``square``) over flat buffers, in place."""
    launch(_hessian_ema_kernel, (h, x), (), (float(beta2),), SQUARE=square)
