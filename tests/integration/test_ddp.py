"""DDP equivalence: 2 gloo processes x 1 micro-batch == 1 process x 2 micro-batches (incl. GNB steps)."""

from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import PYTHON, REPO, python_env, tiny_overrides
from sophia_train import checkpoint as ckpt
from sophia_train.metrics import read_metrics


def run_cli(args: list[str], nproc: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    if nproc > 1:
        cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "sophia_train", *args]
    else:
        cmd = [PYTHON, "-m", "sophia_train", *args]
    return subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("optim", ["sophia_g", "sophia_h", "adamw", "sophia_g+fused", "sophia_g+compile"])
def test_two_process_ddp_equals_single_process_accumulation(byte_data, tmp_path, optim):
    """``+fused``: the Triton path (interpreted on CPU), whose .grad are views of a flat buffer DDP writes into.
    ``+compile``: torch.compile around DDP (graph cut at the buckets) against the whole compiled model."""
    optim, _, variant = optim.partition("+")
    fused, compiled = variant == "fused", variant == "compile"
    extra = ["train.global_batch=8", "train.max_steps=21", "train.eval_interval=7", *(["optim.fused=true"] if fused else []),
             *(["train.compile=true"] if compiled else [])]
    if optim.startswith("sophia"):
        extra += ["optim.hess_interval=4", "optim.hess_fraction=0.5"]  # refreshes at steps 0, 4, 8, 12, 16, 20
    single = run_cli(tiny_overrides(byte_data, tmp_path / "one", *extra, optim=optim))
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli(tiny_overrides(byte_data, tmp_path / "two", *extra, optim=optim), nproc=2)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 process(es) (gloo) x 1 micro-batches" in ddp.stdout
    if fused:
        assert "(fused triton)" in single.stdout and "(fused triton)" in ddp.stdout
    if compiled:
        assert "compiled (whole model)" in single.stdout and "compiled around DDP" in ddp.stdout

    def curves(d):
        rows = read_metrics(d / "metrics.jsonl")
        return ({r["step"]: r["loss"] for r in rows if r["kind"] == "train"},
                {r["step"]: r["val_loss"] for r in rows if r["kind"] == "eval"})

    (ta, va), (tb, vb) = curves(tmp_path / "one"), curves(tmp_path / "two")
    assert sorted(ta) == sorted(tb) == list(range(1, 22))
    assert sorted(va) == sorted(vb)
    for s in ta:
        assert abs(ta[s] - tb[s]) <= 1e-5, (s, ta[s], tb[s])
    for s in va:
        assert abs(va[s] - vb[s]) <= 1e-5, (s, va[s], vb[s])
    a, b = ckpt.load_checkpoint(tmp_path / "one" / "ckpt.pt"), ckpt.load_checkpoint(tmp_path / "two" / "ckpt.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-5)
    if optim.startswith("sophia"):  # rank 0 of the DDP run holds the single-process h
        ha = [s["h"] for s in a["optimizer"]["state"].values()]
        hb = [s["h"] for s in b["optimizer"]["state"].values()]
        assert all(h.abs().sum() > 0 for h in ha)
        for x, y in zip(ha, hb):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("optim", ["sophia_h", "sophia_g"])
def test_all_ranks_hold_the_same_hessian_estimate(byte_data, tmp_path, optim):
    import json

    report = tmp_path / "h.json"
    args = tiny_overrides(byte_data, tmp_path / "run", "train.global_batch=8", "train.max_steps=9", "optim.hess_interval=4",
                          "optim.hess_fraction=0.5", optim=optim)
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "workers" / "ddp_rank_h.py"), str(report), *args]
    out = subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["ranks"] == 2 and result["norm"] > 0
    assert result["max_abs_diff"] == 0.0


@pytest.mark.slow
def test_torchrun_runs_with_the_default_batch_settings(byte_data, tmp_path):
    """The README's bare torchrun line: no grad_accum or global_batch given, one micro-batch per process."""
    out = run_cli(tiny_overrides(byte_data, tmp_path, "train.max_steps=3", "train.eval_interval=3"), nproc=2, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 process(es) (gloo) x 1 micro-batches x 4 x 32 = 256 tokens/step" in out.stdout


@pytest.mark.slow
def test_bad_input_under_torchrun_is_reported_once_by_rank0(byte_data, tmp_path):
    out = run_cli(tiny_overrides(byte_data, tmp_path, "train.global_batch=12"), nproc=2, timeout=120)
    assert out.returncode != 0
    msg = "train.global_batch asks for 3 micro-batches per step, which cannot be split evenly over 2 processes"
    assert out.stderr.count(msg) == 1, out.stderr[-2000:]
