#!/usr/bin/env python
"""Sophia-G optimizer-step cost on GPT-shaped parameter sets, every implementation side by side.

Implementations: the official repo's per-tensor loop (abs/sign/addcmul), ours per-tensor (one
clamped quotient, fewer passes), the foreach path (the default off CUDA; on CPU in chunks of
``CPU_FOREACH_CHUNK`` elements, and once unchunked to show why), the fused Triton kernel (CUDA
only, or the CPU interpreter with --interpret, which measures nothing useful
about speed), and torch.optim.AdamW (foreach / fused) as the familiar baseline. On CUDA the same
run also times a device-to-device copy of the same bytes, the ceiling for a memory-bound update.

    python bench/bench_sophia_update.py --sizes 10 30 100          # CPU
    python bench/bench_sophia_update.py --sizes 124 355 --e2e      # GPU (+ optimizer share of a step)

Bytes per element for the Sophia step: read p, g, m, h and write p, m. With fp32 parameters every variant
moves 24 B. With bf16 parameters the fused kernel keeps m and h in fp32 (18 B) while the unfused variants
keep them in the parameters' bf16 (12 B): the table gives each variant's state dtype and computes its GB/s
and %-of-copy from its own bytes, so neither is flattered by the other's traffic.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

import sophia_train.optim._common as optim_common
from sophia_train.model import GPT, GPTConfig
from sophia_train.optim import SophiaG, param_groups

# (n_layer, n_head, n_embd) giving roughly the named size (millions, vocab 50304 tied)
SHAPES = {1: (1, 2, 16), 10: (4, 4, 256), 30: (6, 6, 384), 100: (10, 12, 768), 124: (12, 12, 768), 355: (24, 16, 1024), 770: (36, 20, 1280)}


def gpt_param_shapes(size: int) -> list[torch.Size]:
    """Parameter shapes of the GPT closest to ``size`` M parameters (built on the meta device)."""
    layers, heads, embd = SHAPES[size]
    with torch.device("meta"):
        model = GPT(GPTConfig(n_layer=layers, n_head=heads, n_embd=embd, block_size=1024, vocab_size=50304))
    return [p.shape for p in model.parameters()]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict, device, reps: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds of each function, timed round-robin so drift hits every variant alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(reps):
        for label, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[label].append((time.perf_counter() - t0) * 1000)
    return {label: statistics.median(ts) for label, ts in times.items()}


def time_it(fn, device, reps: int, warmup: int = 2) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs."""
    return time_interleaved({"": fn}, device, reps, warmup)[""]


def make_params(shapes, device, dtype):
    gen = torch.Generator(device="cpu").manual_seed(0)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=gen).to(device=device, dtype=dtype).requires_grad_(True)
        p.grad = torch.randn(s, generator=gen).to(device=device, dtype=dtype)
        params.append(p)
    return params


def sophia_variant(shapes, device, dtype, **kw):
    params = make_params(shapes, device, dtype)
    groups = param_groups(params, 0.2)
    opt = SophiaG(groups, lr=1e-4, **kw)
    opt.update_hessian()  # h from the grads: a realistic mix of clipped and unclipped coordinates
    return lambda: opt.step(bs=480 * 1024)


def unchunked_foreach_variant(shapes, device, dtype):
    """The foreach path over whole-model lists on CPU (what CPU_FOREACH_CHUNK avoids)."""
    step = sophia_variant(shapes, device, dtype, foreach=True, fused=False)

    def run():
        saved, optim_common.CPU_FOREACH_CHUNK = optim_common.CPU_FOREACH_CHUNK, None
        try:
            step()
        finally:
            optim_common.CPU_FOREACH_CHUNK = saved

    return run


def official_variant(shapes, device, dtype):
    """The official implementation's per-tensor loop (abs, divide, clamp, sign, addcmul), same math."""
    params = make_params(shapes, device, dtype)
    state = [(torch.zeros_like(p), p.grad * p.grad) for p in params]
    lr, wd, beta1, rho, bs = 1e-4, 0.2, 0.965, 0.05, 480 * 1024

    @torch.no_grad()
    def step():
        for p, (m, h) in zip(params, state):
            p.mul_(1 - lr * (wd if p.dim() >= 2 else 0.0))
            m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
            ratio = (m.abs() / (rho * bs * h + 1e-15)).clamp(None, 1)
            p.addcmul_(m.sign(), ratio, value=-lr)

    return step


def adamw_variant(shapes, device, dtype, fused: bool):
    params = make_params(shapes, device, dtype)
    opt = torch.optim.AdamW(params, lr=1e-4, fused=fused or None, foreach=None if fused else True)
    return opt.step


def bytes_per_element(label: str, dtype: torch.dtype) -> int:
    """Bytes the Sophia variant ``label`` reads and writes per parameter: p, g, p' in the parameter dtype and
    m, h, m' in its state dtype (fp32 in the fused kernel, the parameter dtype elsewhere)."""
    size = 2 if dtype == torch.bfloat16 else 4
    return 3 * size + 3 * (4 if "fused" in label else size)


def state_dtype(label: str, dtype: torch.dtype) -> str:
    """The dtype of m and h in variant ``label``."""
    return "fp32" if "fused" in label or dtype == torch.float32 else "bf16"


def variants(shapes: list[tuple[int, ...]], device: torch.device, dtype: torch.dtype, interpret: bool) -> dict[str, Callable]:
    """Builders of every update timed on ``device``: label -> a function returning one optimizer step."""
    out = {
        "official per-tensor loop": lambda: official_variant(shapes, device, dtype),
        "sophia per-tensor": lambda: sophia_variant(shapes, device, dtype, foreach=False, fused=False),
        "sophia foreach": lambda: sophia_variant(shapes, device, dtype, foreach=True, fused=False),
    }
    if device.type == "cpu":
        out["sophia foreach, unchunked"] = lambda: unchunked_foreach_variant(shapes, device, dtype)
    if device.type == "cuda" or interpret:
        out["sophia fused (triton)"] = lambda: sophia_variant(shapes, device, dtype, fused=True)
    out["adamw foreach"] = lambda: adamw_variant(shapes, device, dtype, fused=False)
    if device.type == "cuda":
        out["adamw fused"] = lambda: adamw_variant(shapes, device, dtype, fused=True)
    return out


def end_to_end_row(size: int, n: int, device: torch.device, reps: int) -> str:
    """GPU: a full bf16 training step of the GPT of ``size`` with fused Sophia-G, and the optimizer's share of it."""
    layers, heads, embd = SHAPES[size]
    model = GPT(GPTConfig(n_layer=layers, n_head=heads, n_embd=embd)).to(device)
    opt = SophiaG(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, 50304, (8, 1024), device=device)

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = model(x, x)
        loss.backward()
        opt.step(bs=8 * 1024)
        opt.zero_grad()

    total = time_it(train_step, device, reps)
    opt_ms = time_it(lambda: opt.step(bs=8 * 1024), device, reps)
    return f"| {n / 1e6:.0f}M | end-to-end step (bf16 autocast, 8x1024) | fp32 | {total:.2f} | | | | optimizer {opt_ms / total:.1%} of the step |"


def size_rows(size: int, device: torch.device, dtype: torch.dtype, args: argparse.Namespace) -> list[str]:
    """The table rows of one model size: every variant side by side, and on a GPU the copy bandwidth baseline."""
    shapes = gpt_param_shapes(size)
    n = sum(torch.Size(s).numel() for s in shapes)
    nbytes = n * bytes_per_element("fused", dtype)  # the copy baseline moves what the fused kernel moves
    steps = {label: build() for label, build in variants(shapes, device, dtype, args.interpret).items()}
    results = time_interleaved(steps, device, args.reps)
    del steps
    rows, copy_ms = [], None
    if device.type == "cuda":
        src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        copy_ms = time_it(lambda: dst.copy_(src), device, args.reps * 4)  # reads + writes nbytes in total
        rows.append(f"| {n / 1e6:.0f}M | device copy of the fused kernel's bytes | | {copy_ms:.3f} | {nbytes / copy_ms / 1e6:.0f} | | | 100% |")
    copy_gbs = nbytes / copy_ms / 1e6 if copy_ms else None
    base, fe = results["official per-tensor loop"], results["sophia foreach"]
    for label, ms in results.items():
        sophia = not label.startswith("adamw")
        gbs = n * bytes_per_element(label, dtype) / ms / 1e6 if sophia else None
        pct = f"{gbs / copy_gbs:.0%}" if copy_gbs and gbs else ""
        state = state_dtype(label, dtype) if sophia else ""
        rows.append(f"| {n / 1e6:.0f}M | {label} | {state} | {ms:.2f} | {f'{gbs:.0f}' if gbs else ''} | {base / ms:.2f}x | {fe / ms:.2f}x | {pct} |")
    if args.e2e and device.type == "cuda":
        rows.append(end_to_end_row(size, n, device, args.reps))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100], choices=sorted(SHAPES))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--interpret", action="store_true", help="also time the Triton interpreter on CPU (correctness aid, not speed)")
    ap.add_argument("--e2e", action="store_true", help="GPU: optimizer share of a full training step of that GPT (batch 8x1024)")
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {time.strftime('%Y-%m-%d')} command: python bench/bench_sophia_update.py {' '.join(sys.argv[1:])}")
    print(f"# device: {name} | torch {torch.__version__} | dtype {args.dtype} | median of {args.reps}, variants interleaved")
    print("| params | implementation | m, h | ms/step | GB/s | vs official loop | vs foreach | % of copy BW |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        for row in size_rows(size, device, dtype, args):
            print(row, flush=True)


if __name__ == "__main__":
    main()
