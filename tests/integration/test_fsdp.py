"""FSDP2 (train.parallel=fsdp) on CPU with gloo: equivalence with one process, sharded checkpoints that
resume on another process count and survive a kill -9 mid-save, two "nodes" on one machine, memory table."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import pytest
import torch

from conftest import PYTHON, REPO, compose, python_env, tiny_overrides
from sophia_train import checkpoint as ckpt
from sophia_train.checkpoint import sharded as sharded
from sophia_train.config import ConfigError, validate
from sophia_train.metrics import read_metrics


def launch(args: list[str], nproc: int, module: str = "sophia_train", script: str | None = None, timeout: int = 300):
    """``python -m sophia_train ARGS`` alone (nproc 0) or under torchrun with ``nproc`` processes."""
    target = [str(REPO / "tests" / "workers" / script)] if script else ["-m", module]
    if nproc:
        cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target, *args]
    else:
        cmd = [PYTHON, *target, *args]
    return subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=timeout)


def curves(folder):
    rows = read_metrics(folder / "metrics.jsonl")
    train = {r["step"]: r for r in rows if r["kind"] == "train"}
    val = {r["step"]: r["val_loss"] for r in rows if r["kind"] == "eval"}
    return train, val


def assert_same_run(a, b, steps, tol=1e-5, params_tol=1e-5, stats=("loss",)):
    """Runs ``a`` and ``b`` logged the same values at ``steps`` and ended with the same parameters."""
    (ta, va), (tb, vb) = curves(a), curves(b)
    for s in steps:
        for key in stats:
            x, y = ta[s][key], tb[s][key]
            assert abs(x - y) <= tol * max(1.0, abs(x)), (a.name, s, key, x, y)
    for s in set(va) & set(vb):
        assert abs(va[s] - vb[s]) <= tol, (s, va[s], vb[s])
    sa, sb = ckpt.load_checkpoint(a), ckpt.load_checkpoint(b)
    assert sorted(sa["model"]) == sorted(sb["model"])
    for k in sa["model"]:
        torch.testing.assert_close(sa["model"][k], sb["model"][k], rtol=0, atol=params_tol)
    return sa, sb


ACCUM = ["train.global_batch=8", "train.eval_interval=10", "train.ckpt_interval=10"]


@pytest.mark.slow
@pytest.mark.parametrize("optim", ["adamw", "sophia_g", "sophia_h", "lion"])
def test_two_process_fsdp_equals_single_process_accumulation(byte_data, tmp_path, optim):
    """2 FSDP ranks x 1 micro-batch == 1 process x 2 micro-batches over 30 steps, with Hessian refreshes
    every 4 steps (GNB through FSDP's backward, Hutchinson on a gathered replica): losses, parameters, the
    Hessian EMA, and the logged global statistics (grad norm, not-clipped fraction, ||h||)."""
    extra = [*ACCUM, "train.max_steps=30"]
    stats = ("loss", "grad_norm")
    if optim.startswith("sophia"):
        extra += ["optim.hess_interval=4", "optim.hess_fraction=0.5"]
        stats += ("not_clipped_frac", "hessian_norm")
    one = launch(tiny_overrides(byte_data, tmp_path / "one", *extra, optim=optim), nproc=0)
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(tiny_overrides(byte_data, tmp_path / "two", *extra, "train.parallel=fsdp", optim=optim), nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "fsdp (2 shards per tensor, fp32" in two.stdout and "2 process(es) (gloo) x 1 micro-batches" in two.stdout
    assert sharded.exists(tmp_path / "two" / "ckpt.dcp") and not (tmp_path / "two" / "ckpt.pt").exists()
    sa, sb = assert_same_run(tmp_path / "one", tmp_path / "two", range(1, 31), stats=stats)
    if optim.startswith("sophia"):  # the sharded EMA, gathered, is the single-process one
        for i, st in sa["optimizer"]["state"].items():
            assert st["h"].abs().sum() > 0
            torch.testing.assert_close(st["h"], sb["optimizer"]["state"][i]["h"], rtol=1e-4, atol=1e-10)


MOST_OPTIMS = ["adadelta", "adafactor", "adagrad", "adahessian", "adam", "adamax", "ah_clip", "clip", "ef_clip", "gnb_noclip", "momentum",
               "muon", "nadam", "nesterov", "normalize", "radam", "rmsprop", "s3", "sgd"]


@pytest.mark.slow
def test_every_other_optimizer_trains_under_fsdp(byte_data, tmp_path):
    """The rest of configs/optim under 2-rank FSDP == one process, 6 steps each (one process group for all).
    Adafactor steps on gathered whole tensors (optim/whole.py). Muon's Newton-Schulz iteration runs in
    bf16, where a sharded matmul rounds differently: 3e-3."""
    extra = ["train.global_batch=8", "train.max_steps=6", "train.eval_interval=6", "train.warmup_steps=2"]
    base = [a for a in tiny_overrides(byte_data, tmp_path, *extra) if not a.startswith(("optim=", "train.out_dir="))]
    names = ",".join(MOST_OPTIMS)
    one = launch([str(tmp_path / "one"), names, *base], nproc=0, script="fsdp_worker.py", timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch([str(tmp_path / "two"), names, *base, "train.parallel=fsdp"], nproc=2, script="fsdp_worker.py", timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    for name in MOST_OPTIMS:
        tol = 3e-3 if name == "muon" else 1e-5
        assert_same_run(tmp_path / "one" / name, tmp_path / "two" / name, range(1, 7), tol=tol, params_tol=max(tol, 1e-5))


def test_an_unknown_parallel_mode_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="train.parallel must be ddp or fsdp"):
        validate(compose(["+model=nano", "optim=adamw", "train.parallel=zero3"]))


@pytest.mark.slow
def test_sharded_checkpoint_resumes_on_another_process_count(byte_data, tmp_path):
    """Stop a 2-rank FSDP run at step 6; resume copies with 2, 1 and 3 FSDP ranks and with one plain
    (DDP-mode) process, and resume a single-process run's ckpt.pt with 2 FSDP ranks: each ends as the
    uninterrupted single-process run does. 6 micro-batches per step split 6 / 3 / 2 ways; 3 ranks shard
    every tensor unevenly. Then the folder converts and exports."""
    extra = ["train.batch_size=2", "train.global_batch=12", "train.max_steps=12", "train.eval_interval=6",
             "optim.hess_interval=4", "optim.hess_fraction=0.5"]
    ref = launch(tiny_overrides(byte_data, tmp_path / "ref", *extra), nproc=0)
    assert ref.returncode == 0, ref.stderr[-3000:]
    part = launch(tiny_overrides(byte_data, tmp_path / "part", *extra, "train.parallel=fsdp", "train.stop_after_step=6"), nproc=2)
    assert part.returncode == 0, part.stderr[-3000:]
    single_part = launch(tiny_overrides(byte_data, tmp_path / "single_part", *extra, "train.stop_after_step=6"), nproc=0)
    assert single_part.returncode == 0, single_part.stderr[-3000:]
    for source, nproc, parallel in (("part", 2, "fsdp"), ("part", 0, "fsdp"), ("part", 3, "fsdp"), ("part", 0, "ddp"),
                                    ("single_part", 2, "fsdp")):  # the last: a DDP run's ckpt.pt cut into shards
        folder = tmp_path / f"resume_{source}_{nproc}_{parallel}"
        shutil.copytree(tmp_path / source, folder)
        out = launch(tiny_overrides(byte_data, folder, *extra, f"train.parallel={parallel}", "train.resume=true"), nproc=nproc)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "resuming from step 6" in out.stdout
        assert_same_run(tmp_path / "ref", folder, range(7, 13))
        # a run keeps one checkpoint, in the format of its last save
        assert (folder / "ckpt.pt").exists() == (parallel == "ddp") and sharded.exists(folder / "ckpt.dcp") == (parallel == "fsdp")

    run = tmp_path / "resume_part_2_fsdp"
    done = subprocess.run([PYTHON, "scripts/convert_checkpoint.py", str(run), "--out", str(tmp_path / "single.pt")], cwd=REPO,
                          env=python_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    single, direct = ckpt.load_checkpoint(tmp_path / "single.pt"), ckpt.load_checkpoint(tmp_path / "ref")
    assert single["step"] == 12 and single["optim_name"] == direct["optim_name"]
    assert sorted(single["optimizer"]["state"]) == sorted(direct["optimizer"]["state"])

    pytest.importorskip("transformers")
    from sophia_train.checkpoint.load_run import load_run
    from sophia_train.interop.hf import export_hf

    export_hf(run, tmp_path / "hf")
    import transformers

    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ours = load_run(run).model
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x, full_logits=True)[0], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_kill_9_during_a_sharded_save_leaves_the_previous_checkpoint(byte_data, tmp_path):
    """Rank 1 is SIGKILLed inside the save of step 8, after writing its shard: LATEST still names step 4,
    which loads; resuming removes the torn folder and finishes."""
    run = tmp_path / "run"
    args = tiny_overrides(byte_data, run, "train.global_batch=8", "train.max_steps=12", "train.ckpt_interval=4",
                          "train.parallel=fsdp", optim="adamw")
    killed = launch(["8", *args], nproc=2, script="fsdp_kill_during_save.py")
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert max(r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train") == 8  # died in step 9's save of 8
    # the torn folder stays, unless rank 0 saw the collective fail before torchrun stopped it and removed it itself
    leftovers = [p.name for p in (run / "ckpt.dcp").iterdir() if p.name.endswith(".tmp")]
    for name in leftovers:
        assert name.startswith("step-00000008")
        assert any(p.name.startswith("__1_") for p in (run / "ckpt.dcp" / name).iterdir())  # the dead rank's shard
    assert ckpt.load_checkpoint(run)["step"] == 4
    resumed = launch([*args, "train.resume=true"], nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step 4" in resumed.stdout
    assert all(f"removed ckpt.dcp/{name}" in resumed.stdout for name in leftovers)
    assert ckpt.load_checkpoint(run)["step"] == 12
    assert [p.name for p in (run / "ckpt.dcp").iterdir() if p.is_dir()] == [sharded.latest(run / "ckpt.dcp").name]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_one_machine_with_c10d_rendezvous(byte_data, tmp_path):
    """Two torchrun launches (--nnodes=2, c10d rendezvous on 127.0.0.1), one process each, FSDP: the
    same run as one process with 2 micro-batches."""
    extra = ["train.global_batch=8", "train.max_steps=8", "train.eval_interval=4", "optim.hess_interval=4"]
    one = launch(tiny_overrides(byte_data, tmp_path / "one", *extra), nproc=0)
    assert one.returncode == 0, one.stderr[-3000:]
    port = _free_port()
    args = tiny_overrides(byte_data, tmp_path / "two", *extra, "train.parallel=fsdp")
    nodes = [subprocess.Popen([PYTHON, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-nodes", "-m", "sophia_train", *args],
                              cwd=REPO, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [n.communicate(timeout=300) for n in nodes]
    for n, (_, err) in zip(nodes, outs):
        assert n.returncode == 0, err[-3000:]
    assert sum("2 process(es) (gloo) x 1 micro-batches" in o for o, _ in outs) == 1  # printed by global rank 0 only
    assert_same_run(tmp_path / "one", tmp_path / "two", range(1, 9))


def test_memory_table_counts_the_real_model_and_optimizer():
    """Known answers: AdamW keeps two fp32 tensors per parameter (plus 0-d step counters), Lion one; FSDP
    holds ceil(rows / world) rows of each tensor."""
    from sophia_train.studies.memory import build_on_meta, state_bytes

    model, adamw = build_on_meta("nano", "adamw", vocab_size=256)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    ddp = state_bytes(model, adamw, "ddp", 8)
    assert (ddp.params, ddp.grads) == (4 * n, 4 * n)
    assert ddp.optim == 2 * 4 * n + 4 * len(params)  # exp_avg, exp_avg_sq; a float32 step per parameter
    fsdp = state_bytes(model, adamw, "fsdp", 8)
    assert fsdp.params == sum(4 * -(-p.shape[0] // 8) * (p.numel() // p.shape[0]) for p in params)
    assert fsdp.params * 8 >= ddp.params and fsdp.params < ddp.params / 4
    _, lion = build_on_meta("nano", "lion", vocab_size=256)
    assert state_bytes(model, lion, "ddp", 8).optim == 4 * n
    proc = subprocess.run([sys.executable, "scripts/memory_table.py", "--models", "nano", "--optims", "sophia_g", "--world", "4"],
                          cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "| nano |" in proc.stdout and "FSDP x4" in proc.stdout, proc.stderr[-2000:]


def test_grad_norm_does_not_depend_on_how_tensors_are_cut():
    """The global norm (fp64 accumulation) of whole tensors equals the one summed from row pieces."""
    from sophia_train.distributed.parallel import grad_norm

    torch.manual_seed(0)
    grads = [torch.randn(37, 11) * 3, torch.randn(5), torch.randn(64, 64) * 1e-3]
    whole = grad_norm(grads)
    pieces = [g[i::3] for g in grads for i in range(3)]  # rows dealt over 3 "ranks"
    assert float(whole) == float(grad_norm(pieces))
    ref = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).float()
    assert float(whole) == float(ref)


def test_single_process_fsdp_falls_back_from_fused_and_its_checkpoint_serves_eval_only(byte_data, tmp_path):
    """FSDP in one plain process (a group of one): optim.fused=true cannot take shards into its flat
    buffers, falls back to foreach and says so; keep_best writes best.dcp; train.eval_only reads the
    sharded checkpoint under either parallel mode and reports the val loss the run logged."""
    run = tmp_path / "run"
    args = tiny_overrides(byte_data, run, "train.max_steps=4", "train.eval_interval=4", "train.keep_best=true", "train.parallel=fsdp",
                          "optim.fused=true")
    out = launch(args, nproc=0)
    assert out.returncode == 0, out.stderr[-3000:]
    best = ckpt.load_checkpoint(run / "best.dcp")  # train.keep_best writes a sharded best.dcp the same way
    assert best["step"] == 4 and best["best_val"] == pytest.approx(curves(run)[1][4], abs=1e-6)
    meta = ckpt.load_checkpoint_meta(run)  # ckpt.dcp's meta.pt alone: what init_from's checks read
    assert meta["step"] == 4 and "model" not in meta and meta["model_config"] == best["model_config"]
    assert "optim sophia_g (foreach; fused=true fell back: FSDP shards cannot move into the Triton path's flat buffers)" in out.stdout
    assert "fsdp (1 shards per tensor, fp32)" in out.stdout
    _, val = curves(run)
    for parallel in ("fsdp", "ddp"):
        ev = launch([*args[:-2], f"train.parallel={parallel}", "train.eval_only=true"], nproc=0)
        assert ev.returncode == 0, ev.stderr[-3000:]
        assert f"val loss {val[4]:.4f}" in ev.stdout and "(step 4)" in ev.stdout, ev.stdout[-1500:]


def test_a_failed_sharded_save_keeps_the_previous_checkpoint(byte_data, tmp_path, monkeypatch):
    """A disk-full write inside DCP becomes the one-paragraph message; LATEST keeps naming step 4 and
    the unfinished folder is gone."""
    import errno
    import os

    import torch.distributed as dist
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    from sophia_train.trainer import Trainer

    args = tiny_overrides(byte_data, tmp_path, "train.max_steps=4", "train.parallel=fsdp", optim="adamw")
    try:
        Trainer(compose(args)).fit()
        good = sharded.latest(tmp_path / "ckpt.dcp")
        assert good is not None and good.name.startswith("step-00000004")

        def disk_full(self, plan, planner):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(FileSystemWriter, "write_data", disk_full)
        tr = Trainer(compose([*args, "train.max_steps=8", "train.resume=true", "train.resume_allow=[train.max_steps]"]))
        with pytest.raises(ConfigError, match=r"could not write the checkpoint of step 8 .*the disk is full.*step 4\) is intact"):
            tr.fit()
        assert sharded.latest(tmp_path / "ckpt.dcp") == good
        assert [p.name for p in (tmp_path / "ckpt.dcp").iterdir() if p.is_dir()] == [good.name]
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
