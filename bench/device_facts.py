#!/usr/bin/env python
"""What the device is and what it can do, measured: name, memory, SM count, versions, the datasheet bf16
peak, a device-to-device copy's bandwidth and a bf16 matrix product's FLOP/s (the ceilings the fused update
and MFU are compared with), timed as bench_sophia_update.py times its copy baseline (median of synchronised reps).
Writes one JSON object (``--out``, else stdout).

    python bench/device_facts.py --out facts.json            # GPU
    python bench/device_facts.py --dry-run --out facts.json  # CPU rehearsal, small sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a plain checkout works too
from bench_sophia_update import time_it  # noqa: E402  (this script's folder is on the path)

from sophia_train.metrics import peak_flops_for_name  # noqa: E402


def copy_bandwidth_gbs(device: torch.device, nbytes: int, reps: int) -> float:
    """Bytes read plus bytes written per second (GB/s) of a device-to-device copy of ``nbytes``."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_it(lambda: dst.copy_(src), device, reps, warmup=3)
    return 2 * nbytes / ms / 1e6


def matmul_tflops(device: torch.device, n: int, reps: int) -> float:
    """TFLOP/s of an n x n x n bf16 matrix product on random data."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = time_it(lambda: a @ b, device, reps, warmup=3)
    return 2 * n**3 / ms / 1e9


def versions() -> dict[str, str]:
    """Python, torch, CUDA, Triton (and the driver, where nvidia-smi answers)."""
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda)}
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = "not installed"
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    return out


def facts(dry_run: bool) -> dict:
    """Every fact and measurement as one dict."""
    cuda = torch.cuda.is_available() and not dry_run
    device = torch.device("cuda" if cuda else "cpu")
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "dry_run": dry_run, **versions()}
    if cuda:
        props = torch.cuda.get_device_properties(device)
        out.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1), sms=props.multi_processor_count,
                   capability=f"sm_{props.major}{props.minor}")
        out["datasheet_bf16_tflops"] = (peak_flops_for_name(props.name) or 0) / 1e12 or None
    else:
        out.update(device=f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
                   datasheet_bf16_tflops=None)
    nbytes, n, reps = (2**22, 256, 3) if dry_run else (2**32, 8192, 10)
    out["copy_gbs"] = round(copy_bandwidth_gbs(device, nbytes, reps), 1)
    out["copy_bytes"] = nbytes
    out["matmul_bf16_tflops"] = round(matmul_tflops(device, n, reps), 2)
    out["matmul_n"] = n
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the JSON here (default: stdout)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, small sizes: the code path, no real figures")
    args = ap.parse_args()
    text = json.dumps(facts(args.dry_run), indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
