"""Fused Lion and S3 steps over flat 1-D buffers (same layout and conventions as ``sophia.py``).

Lion: one read of p, g, m and one write of p, m per element. S3: one read of p, g, m, s and one write
of p, m, s. Math in fp32, m and s fp32, bf16 parameters rounded to nearest-even on store. S3's
division is IEEE-rounded; |g|^p and its p-th root go through exp/log, which GPUs approximate
(ex2/lg2.approx: about 1e-6 relative error, far below what the update's lr scale can see).
"""

from __future__ import annotations

import torch

from .sophia import TRITON_AVAILABLE, launch

if TRITON_AVAILABLE:
    import triton
    import triton.language as tl

    from .sophia import _round_to_bf16

    @triton.jit
    def _lion_kernel(p_ptr, g_ptr, m_ptr, n_elements, lr, wd, beta1, beta2, BF16: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elements
        p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=mask, other=0.0)
        c = beta1 * m + (1.0 - beta1) * g
        p = p * (1.0 - lr * wd) - lr * tl.where(c > 0, 1.0, tl.where(c < 0, -1.0, 0.0))
        if BF16:
            p = _round_to_bf16(p)
        tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)
        tl.store(m_ptr + offs, beta2 * m + (1.0 - beta2) * g, mask=mask)

    @triton.jit
    def _s3_kernel(p_ptr, g_ptr, m_ptr, s_ptr, n_elements, lr, wd, beta, power, inv_power, eps,
                   NESTEROV: tl.constexpr, BF16: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elements
        p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=mask, other=0.0)
        s = tl.load(s_ptr + offs, mask=mask, other=0.0)
        ag = tl.abs(g)
        # the floor is float32's smallest normal (2**-126): a smaller literal (1e-38) is typed fp64 by Triton 3.6,
        # whose tl.div_rn then refuses the mixed types; only the log of a non-zero |g| below it changes (ignored by where)
        g_pow = tl.where(ag > 0, tl.exp(power * tl.log(tl.maximum(ag, 1.1754943508222875e-38))), 0.0)
        m = beta * m + (1.0 - beta) * g
        s = beta * s + (1.0 - beta) * g_pow
        if NESTEROV:
            num = beta * m + (1.0 - beta) * g
            base = beta * s + (1.0 - beta) * g_pow
        else:
            num = m
            base = s
        den = tl.where(base > 0, tl.exp(tl.log(tl.maximum(base, 1.1754943508222875e-38)) * inv_power), 0.0)
        p = p * (1.0 - lr * wd) - lr * tl.div_rn(num, den + eps)
        if BF16:
            p = _round_to_bf16(p)
        tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(s_ptr + offs, s, mask=mask)


def lion_step_(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, *, lr: float, wd: float, beta1: float, beta2: float) -> None:
    """One fused Lion update of flat buffers in place."""
    launch(_lion_kernel, (p, g, m), (), (float(lr), float(wd), float(beta1), float(beta2)), BF16=p.dtype == torch.bfloat16)


def s3_step_(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, s: torch.Tensor, *, lr: float, wd: float, beta: float,
             power: float, eps: float, nesterov: bool) -> None:
    """One fused S3 update of flat buffers in place."""
    launch(_s3_kernel, (p, g, m, s), (), (float(lr), float(wd), float(beta), float(power), 1.0 / float(power), float(eps)),
           NESTEROV=nesterov, BF16=p.dtype == torch.bfloat16)
