"""Per-rank memory of training state under DDP and FSDP, from the real model and optimizer.

``state_bytes`` builds the GPT and the optimizer on the meta device (no memory is allocated), takes one
step so that every lazily created state tensor exists, and counts bytes: parameters (fp32 master
weights), gradients (fp32) and optimizer state. Under DDP every rank holds all of it; under FSDP2 a
rank holds ``ceil(dim0 / world)`` rows of every tensor (FSDP pads dim 0 to a multiple of the world
size) plus, while a unit runs, its gathered parameters (``gathered``: the largest unit, twice for the
prefetch, in the compute dtype). Activations come on top of both and are not counted.

``measure`` (under torchrun) trains a few steps and reports each rank's peak resident memory above
what the process held before the model existed: the CPU counterpart of the table.

    python scripts/memory_table.py --world 8 --out bench/results/memory_table.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from sophia_train.atomic import atomic_write_text
from sophia_train.compose import compose_config
from sophia_train.distributed import destroy_process_group, dist_info_from_env
from sophia_train.model import GPT, gpt_config
from sophia_train.optim import build_optimizer, optimizer_step
from sophia_train.trainer import Trainer

GiB = 1024**3


@dataclass
class StateBytes:
    """Bytes one rank holds for parameters, gradients and optimizer state, and the transient gathered unit."""

    params: int
    grads: int
    optim: int
    gathered: int = 0

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optim + self.gathered


def _shard_numel(shape: torch.Size, world: int) -> int:
    if len(shape) == 0:
        return 1
    return math.ceil(shape[0] / world) * math.prod(shape[1:])


def _bytes(tensors, world: int | None) -> int:
    """Bytes of ``tensors`` on one rank: whole (``world`` None) or as FSDP dim-0 shards (0-d tensors whole)."""
    total = 0
    for t in tensors:
        n = t.numel() if world is None or t.dim() == 0 else _shard_numel(t.shape, world)
        total += n * t.element_size()
    return total


def build_on_meta(model_name: str, optim_name: str, vocab_size: int = 50257):
    """The model ``+model=model_name`` and optimizer ``optim=optim_name`` on the meta device, after one
    step (so the optimizer's state exists)."""

    cfg = compose_config([f"+model={model_name}", f"optim={optim_name}"])
    with torch.device("meta"):
        model = GPT(gpt_config(cfg.model, vocab_size, "openwebtext"))
    opt = build_optimizer(model, cfg.optim, torch.device("meta"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer_step(opt, 1)
    return model, opt


def state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer, parallel: str, world: int,
                compute_bytes: int = 2) -> StateBytes:
    """Per-rank bytes of ``model`` + ``opt`` under ``parallel`` (ddp | fsdp) over ``world`` ranks."""
    params = list(model.parameters())
    states = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    if parallel == "ddp":
        return StateBytes(_bytes(params, None), _bytes(params, None), _bytes(states, None))
    units = [list(b.parameters()) for b in model.transformer.h]
    in_blocks = {id(p) for u in units for p in u}
    units.append([p for p in params if id(p) not in in_blocks])  # the root: embeddings, tied head, ln_f
    biggest = max(sum(p.numel() for p in u) for u in units)
    return StateBytes(_bytes(params, world), _bytes(params, world), _bytes(states, world), gathered=2 * biggest * compute_bytes)


def table(models: list[str], optims: list[str], world: int) -> str:
    """Markdown: per-rank GiB of parameters, gradients and optimizer state under DDP and FSDP."""
    lines = [
        f"| model | params | optimizer | DDP: params + grads + optim = total | FSDP x{world}: params + grads + optim "
        f"(+ gathered unit) = total | FSDP / DDP |",
        "| --- | ---: | --- | --- | --- | ---: |",
    ]
    for m in models:
        for o in optims:
            model, opt = build_on_meta(m, o)
            n = sum(p.numel() for p in model.parameters())
            d, f = state_bytes(model, opt, "ddp", world), state_bytes(model, opt, "fsdp", world)
            lines.append(
                f"| {m} | {n / 1e6:,.0f}M | {o} | {d.params / GiB:.2f} + {d.grads / GiB:.2f} + {d.optim / GiB:.2f} = "
                f"**{d.total / GiB:.2f} GiB** | {f.params / GiB:.2f} + {f.grads / GiB:.2f} + {f.optim / GiB:.2f} "
                f"(+ {f.gathered / GiB:.2f}) = **{f.total / GiB:.2f} GiB** | {f.total / d.total:.2f} |"
            )
    return "\n".join(lines)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(overrides: list[str]) -> dict:
    """Train with ``overrides`` (under torchrun or alone); this rank's peak RSS above its start, in bytes."""

    base = _rss_bytes()
    info = dist_info_from_env()
    Trainer(compose_config(overrides), info).fit()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    destroy_process_group()
    return {"rank": info.rank, "peak_above_start": peak - base}


def measured_table(data_dir: str, out_root: Path, nproc: int, model_args: list[str]) -> str:
    """Markdown: measured per-rank peak memory of the same tiny run under DDP and FSDP on CPU (gloo)."""
    rows = ["| parallel | processes | peak RSS above start, per rank (MiB) |", "| --- | ---: | --- |"]
    for parallel in ("ddp", "fsdp"):
        out = out_root / parallel
        args = [*model_args, "optim=adamw", f"data.dir={data_dir}", f"train.out_dir={out}", f"train.parallel={parallel}",
                "train.overwrite=true", "train.max_steps=3", "train.warmup_steps=1", "train.eval_iters=1",
                "train.eval_interval=3", "train.plot=false", "train.batch_size=2", "train.seq_len=64", "train.threads=1"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
               "sophia_train.studies.memory", "--measure", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            raise RuntimeError(f"the {parallel} measurement failed:\n{done.stderr[-2000:]}")
        peaks = [json.loads((out / f"memory_rank{r}.json").read_text()) for r in range(nproc)]
        mib = ", ".join(f"{r['peak_above_start'] / 2**20:.0f}" for r in peaks)
        rows.append(f"| {parallel} | {nproc} | {mib} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """``scripts/memory_table.py``: the computed table (and with ``--measure-data`` the measured CPU one)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--measure":  # one rank of a measured run (started by measured_table)

        out_dir = Path(compose_config(argv[1:]).train.out_dir)
        result = measure(argv[1:])
        atomic_write_text(out_dir / f"memory_rank{result['rank']}.json", json.dumps(result))
        return 0
    ap = argparse.ArgumentParser(description="Per-rank memory of parameters, gradients and optimizer state: DDP vs FSDP.")
    ap.add_argument("--models", nargs="+", default=["gpt2_small", "gpt2_medium", "gpt2_large", "gpt2_xl"])
    ap.add_argument("--optims", nargs="+", default=["adamw", "sophia_g", "lion"])
    ap.add_argument("--world", type=int, default=8, help="GPUs (ranks) FSDP shards over")
    ap.add_argument("--measure-data", help="a prepared byte-level data folder: also measure a tiny run on CPU (2 processes)")
    ap.add_argument("--measure-model", nargs="*", default=["+model=tiny", "model.n_layer=4", "model.n_embd=512", "model.n_head=8"],
                    help="model overrides of the measured run")
    ap.add_argument("--runs", default="runs/memory", help="where the measured runs write (their checkpoints are not results)")
    ap.add_argument("--out", help="also write the tables to this markdown file")
    args = ap.parse_args(argv)
    text = (f"Per-rank memory of training state, {args.world} GPUs, fp32 master weights, gradients and optimizer "
            f"state; FSDP's gathered unit in bf16 (`python scripts/memory_table.py --world {args.world}`):\n\n"
            + table(args.models, args.optims, args.world))
    if args.measure_data:
        out_root = Path(args.runs)
        text += ("\n\nMeasured on CPU (gloo), the same 3-step AdamW run of a "
                 f"{' '.join(args.measure_model)} model under both:\n\n"
                 + measured_table(args.measure_data, out_root, 2, args.measure_model))
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
