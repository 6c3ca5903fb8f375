"""Compile the optimizer kernels for NVIDIA GPUs without one, and check their memory traffic.

Triton compiles ahead of time for any target (``GPUTarget("cuda", 90, 32)`` is an H100) with the
ptxas it ships, so this runs on a CPU-only machine. For each kernel variant the PTX's global loads
and stores are counted and turned into bytes per element, then compared with the single-pass ideal
(every buffer read once, every updated buffer written once: Sophia-G fp32 reads p, g, m, h and
writes p, m, 16 + 8 bytes). It also reports the vector width: with the flat buffers' 16-divisible
lengths the JIT emits 128-bit accesses; an odd length (the ``n%16!=0`` rows) gives scalar ones.
Last, it lists approximate floating-point instructions (Sophia's kernels use IEEE ``div.rn``/``sqrt.rn``).

    python bench/compile_kernels.py                     # sm_80 and sm_90, markdown table
    python bench/compile_kernels.py --arch 90 --check   # exit 1 if any kernel is not single-pass

Import it with ``TRITON_INTERPRET`` unset (the kernels read it at import); ``bench/compile_kernels.py`` does.

The specialization mirrors what the JIT does at run time: pointers from the caching allocator are
16-byte aligned and integer arguments divisible by 16 get a divisibility hint.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from dataclasses import dataclass

DTYPE_BYTES = {"fp32": 4, "bf16": 2}


@dataclass
class Variant:
    """One compiled specialization of a kernel and the buffers it must touch once per element."""

    kernel: str
    label: str
    signature: dict[str, str]
    constexprs: dict[str, object]
    reads: tuple[str, ...]  # dtypes of the buffers read once per element
    writes: tuple[str, ...]  # dtypes of the buffers written once per element

    @property
    def ideal_bytes(self) -> tuple[int, int]:
        return sum(DTYPE_BYTES[d] for d in self.reads), sum(DTYPE_BYTES[d] for d in self.writes)


def variants(block: int) -> list[Variant]:
    """Every specialization the optimizers launch (fp32 state; fp32 or bf16 parameters)."""
    out = []
    for pd in ("fp32", "bf16"):
        for denom, name in enumerate(("official", "max", "max_sqrt")):
            for clip in (True, False) if denom == 0 and pd == "fp32" else (True,):
                sig = {"p_ptr": f"*{pd}", "g_ptr": f"*{pd}", "m_ptr": "*fp32", "h_ptr": "*fp32", "count_ptr": "*i64",
                       "n_elements": "i32", "lr": "fp32", "wd": "fp32", "beta1": "fp32", "scale": "fp32", "eps": "fp32"}
                consts = {"CLIP": clip, "DENOM": denom, "BF16": pd == "bf16", "BLOCK": block}
                out.append(Variant("sophia_step", f"{pd} params, {name}{'' if clip else ', no clip'}", sig, consts,
                                   (pd, pd, "fp32", "fp32"), (pd, "fp32")))
        for square in (True, False):
            sig = {"h_ptr": "*fp32", "x_ptr": f"*{pd}", "n_elements": "i32", "beta2": "fp32"}
            out.append(Variant("hessian_ema", f"{pd} x, {'squared' if square else 'as given'}", sig,
                               {"SQUARE": square, "BLOCK": block}, ("fp32", pd), ("fp32",)))
        sig = {"p_ptr": f"*{pd}", "g_ptr": f"*{pd}", "m_ptr": "*fp32", "n_elements": "i32", "lr": "fp32", "wd": "fp32",
               "beta1": "fp32", "beta2": "fp32"}
        out.append(Variant("lion", f"{pd} params", sig, {"BF16": pd == "bf16", "BLOCK": block}, (pd, pd, "fp32"), (pd, "fp32")))
        for nesterov in (True, False):
            sig = {"p_ptr": f"*{pd}", "g_ptr": f"*{pd}", "m_ptr": "*fp32", "s_ptr": "*fp32", "n_elements": "i32", "lr": "fp32",
                   "wd": "fp32", "beta": "fp32", "power": "fp32", "inv_power": "fp32", "eps": "fp32"}
            out.append(Variant("s3", f"{pd} params, {'nesterov' if nesterov else 'plain'}", sig,
                               {"NESTEROV": nesterov, "BF16": pd == "bf16", "BLOCK": block},
                               (pd, pd, "fp32", "fp32"), (pd, "fp32", "fp32")))
    return out


def kernel_functions() -> dict:
    from sophia_train_kernels.sign_methods import _lion_kernel, _s3_kernel
    from sophia_train_kernels.sophia import _hessian_ema_kernel, _sophia_step_kernel

    return {"sophia_step": _sophia_step_kernel, "hessian_ema": _hessian_ema_kernel, "lion": _lion_kernel, "s3": _s3_kernel}


ACCESS = re.compile(r"\b(ld|st)\.global((?:\.[\w:]+)*)")
APPROX = re.compile(r"\b((?:div\.full|div\.approx|sqrt\.approx|rcp\.approx|rsqrt\.approx|ex2\.approx|lg2\.approx)[\w.]*)")


def approximate_ops(ptx: str) -> list[str]:
    """The PTX's approximate floating-point instructions (IEEE-rounded ones are ``.rn``)."""
    return sorted(set(APPROX.findall(ptx)))


def global_traffic(ptx: str, threads: int, block: int) -> dict[str, float]:
    """Bytes per element loaded and stored by the PTX's global accesses, and their widths in bits."""
    total = {"ld": 0, "st": 0}
    widths = set()
    for op, suffix in ACCESS.findall(ptx):
        parts = suffix.split(".")
        vec = next((int(x[1:]) for x in parts if re.fullmatch(r"v\d", x)), 1)
        bits = next((int(x[1:]) for x in parts if re.fullmatch(r"[bfus]\d+", x)), 0)
        total[op] += vec * bits // 8
        widths.add(vec * bits)
    return {"read": total["ld"] * threads / block, "write": total["st"] * threads / block, "widths": sorted(widths)}


def compile_variant(fn, v: Variant, arch: int, n_divisible: bool):
    """The compiled kernel for ``v`` on sm_<arch>, specialized like the run-time JIT."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sophia_train_kernels.sophia import LAUNCH_OPTIONS

    names = list(v.signature)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if v.signature[n].startswith("*")}
    if n_divisible:
        attrs[(names.index("n_elements"),)] = [["tt.divisibility", 16]]
    signature = dict(v.signature, **{k: "constexpr" for k in v.constexprs})
    src = ASTSource(fn=fn, signature=signature, constexprs=v.constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(LAUNCH_OPTIONS))


def analyse(arches: list[int]) -> list[dict]:
    """Compile every variant for every arch (plus one odd-length Sophia row per arch); one dict per row."""
    from sophia_train_kernels.sophia import BLOCK_SIZE

    fns = kernel_functions()
    rows = []
    every = variants(BLOCK_SIZE)
    todo = [(v, True) for v in every] + [(every[0], False)]
    for arch in arches:
        for v, n_div in todo:
            k = compile_variant(fns[v.kernel], v, arch, n_div)
            traffic = global_traffic(k.asm["ptx"], k.metadata.num_warps * 32, BLOCK_SIZE)
            ideal_r, ideal_w = v.ideal_bytes
            rows.append({"arch": arch, "kernel": v.kernel, "variant": v.label + ("" if n_div else ", n%16!=0"),
                         "read": traffic["read"], "write": traffic["write"], "ideal_read": ideal_r, "ideal_write": ideal_w,
                         "widths": traffic["widths"], "single_pass": (traffic["read"], traffic["write"]) == (ideal_r, ideal_w),
                         "n_divisible": n_div, "approx": approximate_ops(k.asm["ptx"])})
    return rows


def main() -> int:
    """Command line of ``bench/compile_kernels.py``: the table, and with ``--check`` the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities (80: A100, 90: H100)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every kernel is single-pass with 128-bit accesses only")
    args = ap.parse_args()
    try:
        import triton
    except ImportError:
        print("error: triton is not installed (pip install triton)", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = analyse(args.arch)
    print(f"# triton {triton.__version__}; bytes per element from the PTX's global loads/stores vs the single-pass ideal")
    print("| arch | kernel | variant | read B/elem | write B/elem | ideal (read + write) | access widths | single pass | approximate ops |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| sm_{r['arch']} | {r['kernel']} | {r['variant']} | {r['read']:g} | {r['write']:g} | "
              f"{r['ideal_read']} + {r['ideal_write']} | {'/'.join(map(str, r['widths']))}-bit | {'yes' if r['single_pass'] else 'NO'} | "
              f"{', '.join(r['approx']) or 'none'} |")
    bad = [r for r in rows if r["n_divisible"] and (not r["single_pass"] or r["widths"] != [128])]
    if args.check and bad:
        print(f"error: {len(bad)} kernel(s) are not single-pass with 128-bit accesses", file=sys.stderr)
        return 1
    return 0
