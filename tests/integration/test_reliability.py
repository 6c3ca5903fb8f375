"""Work is never lost where signals, rewrites and full disks are (the reliability audit's items 3-5, 8, 11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import PYTHON, REPO, compose, python_env, tiny_overrides
from sophia_train import checkpoint as ckpt
from sophia_train.config import ConfigError
from sophia_train.metrics import read_metrics
from sophia_train.trainer import Trainer


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "sophia_train", *args], cwd=REPO, env=python_env(), capture_output=True, text=True,
                          timeout=timeout)


# --- every rewrite is atomic: a kill in the middle of one leaves the previous file -------------------
KILLED_REWRITE = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    sys.path.insert(0, "tests")
    from conftest import compose, tiny_overrides
    from sophia_train.metrics import open_run_log
    data, out, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    cfg = compose(tiny_overrides(data, out))
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; by default it kills, as SIGKILL would
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # a write past this many bytes: SIGXFSZ, the process dies
    open_run_log(cfg, out, resumed_at=10_000, enabled=True)
    print("the rewrite finished")
""")


@pytest.mark.parametrize("victim", ["metrics.jsonl", "config.yaml"])
def test_a_kill_during_a_rewrite_leaves_the_previous_file(byte_data, tmp_path, victim):
    rows = [{"kind": "train", "step": s, "loss": 1.0 / (s + 1), "pad": "x" * 40} for s in range(1, 20_001)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    old_config = "run_name: an earlier invocation's config\n" * 200
    (tmp_path / "config.yaml").write_text(old_config)
    # metrics.jsonl keeps 10,000 rows (~0.7 MB): a 64 KB limit kills its rewrite; config.yaml (~2 KB) dies at 512 bytes
    limit = 64_000 if victim == "metrics.jsonl" else 512
    done = subprocess.run([PYTHON, "-c", KILLED_REWRITE, str(byte_data), str(tmp_path), str(limit)], cwd=REPO, env=python_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGXFSZ, done.stderr  # killed mid-write, as by SIGKILL
    if victim == "metrics.jsonl":
        assert read_metrics(tmp_path / "metrics.jsonl") == rows  # all 20,000 rows: the torn copy was a temp file
    else:
        assert (tmp_path / "config.yaml").read_text() == old_config
    leftovers = [p for p in tmp_path.iterdir() if ".tmp." in p.name]
    assert leftovers  # the torn temp file, which the next owner of the folder removes
    removed = ckpt.remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(leftovers) and not [p for p in tmp_path.iterdir() if ".tmp." in p.name]


# --- a full disk during a save or an append is one paragraph; the previous checkpoint survives -------
ZIP_WRITER_ENOSPC = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")


@pytest.mark.parametrize("which", ["ckpt.pt", "best.pt"])
def test_torch_reporting_a_full_disk_as_runtime_error_gives_the_disk_full_message(byte_data, tmp_path, monkeypatch, which):
    import sophia_train.atomic as atomic

    args = tiny_overrides(byte_data, tmp_path, "train.max_steps=8", "train.ckpt_interval=2", "train.eval_interval=2",
                          "train.keep_best=true")
    Trainer(compose([*args, "train.stop_after_step=4"])).fit()
    before = {name: (tmp_path / name).read_bytes() for name in ("ckpt.pt", "best.pt")}
    real_save = torch.save

    def save_until_the_disk_fills(obj, f, *a, **k):
        if not Path(f.name).name.startswith(which):  # the other file's saves go through
            return real_save(obj, f, *a, **k)
        f.write(b"PK\x03\x04 partial")  # what the zip writer got out before ENOSPC
        raise ZIP_WRITER_ENOSPC

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    monkeypatch.setattr(atomic, "disk_is_full", lambda folder, margin=1 << 20: True)
    with pytest.raises(ConfigError, match=r"could not write the checkpoint of step \d+ to .*: the disk is full\. The partial "
                                          r"file was removed and the last checkpoint \(.*ckpt.pt, step 4\) is intact"):
        Trainer(compose([*args, "train.resume=true"])).fit()
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "ckpt.pt").read_bytes() == before["ckpt.pt"]
    assert (tmp_path / which).read_bytes() == before[which]
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name]


def test_a_metrics_append_on_a_full_disk_says_so(byte_data, tmp_path):
    tr = Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=4")))
    tr.logger.path = Path("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(ConfigError, match=r"could not append to /dev/full: the disk is full\. No checkpoint was written"):
        tr.fit()


def _mount_tmpfs(where: Path, size: int) -> bool:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def test_a_real_full_disk_during_a_save_gives_the_message_and_keeps_the_checkpoint(byte_data, tmp_path):
    # a checkpoint of this run is ~0.5 MB: the first fits, the next one (written beside it, then renamed) does not
    size = len(_nano_checkpoint_bytes(byte_data, tmp_path / "probe"))
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, int(size * 1.6)):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run = disk / "run"
        args = tiny_overrides(byte_data, run, "train.max_steps=8", "train.ckpt_interval=2")
        out = cli(*args)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and "the disk is full" in out.stderr, out.stderr
        assert "the last checkpoint" in out.stderr and "step 2) is intact" in out.stderr
        assert ckpt.load_checkpoint(run / "ckpt.pt")["step"] == 2
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def _nano_checkpoint_bytes(byte_data, folder: Path) -> bytes:
    Trainer(compose(tiny_overrides(byte_data, folder, "train.max_steps=2"))).fit()
    return (folder / "ckpt.pt").read_bytes()


# --- 11. a resume adds a resume row, not a second start; a NaN checkpoint is not "intact" ----------
def test_a_resume_logs_one_resume_row_and_no_second_start(byte_data, tmp_path):
    args = tiny_overrides(byte_data, tmp_path, "train.max_steps=8")
    Trainer(compose([*args, "train.stop_after_step=4"])).fit()
    Trainer(compose([*args, "train.resume=true", "train.stop_after_step=6"])).fit()
    Trainer(compose([*args, "train.resume=true"])).fit()
    kinds = [r["kind"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert kinds.count("start") == 1
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "resume"] == [4, 6]


def test_a_checkpoint_of_nan_weights_is_refused_not_called_intact(byte_data, tmp_path):
    args = tiny_overrides(byte_data, tmp_path, "train.max_steps=8")
    Trainer(compose([*args, "train.stop_after_step=4"])).fit()
    state = ckpt.load_checkpoint(tmp_path / "ckpt.pt")
    state["model"] = {k: torch.full_like(v, float("nan")) for k, v in state["model"].items()}
    ckpt.save_checkpoint(state, tmp_path / "ckpt.pt")
    crafted = (tmp_path / "ckpt.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"\(step 4\) holds NaN/inf weights or optimizer state, so it cannot be resumed"):
        Trainer(compose([*args, "train.resume=true"]))
    assert (tmp_path / "ckpt.pt").read_bytes() == crafted
    assert os.path.getsize(tmp_path / "metrics.jsonl") > 0


# --- 3. SIGTERM / SIGINT / SIGUSR1 save the current step and stop; the resumed run is the same run ----
def _wait_for_step(folder: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = read_metrics(folder / "metrics.jsonl") if (folder / "metrics.jsonl").exists() else []
        if any(r["kind"] == "train" and r["step"] >= step for r in rows):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no step {step} in {timeout} s")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(run)["model"]


def _command(args: list[str], nproc: int) -> list[str]:
    launcher = [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [PYTHON]
    return [*launcher, "-m", "sophia_train", *args]


def _run(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    return subprocess.run(_command(args, nproc), cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=600)


def _stop_and_resume(byte_data, tmp_path, sig: signal.Signals, nproc: int, extra: tuple[str, ...] = ()) -> None:
    steps = ("train.max_steps=300", "train.ckpt_interval=0", "train.eval_interval=100", *extra)
    whole = tmp_path / "whole"
    done = _run(tiny_overrides(byte_data, whole, *steps), nproc)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "stopped"
    args = tiny_overrides(byte_data, run, *steps)
    proc = subprocess.Popen(_command(args, nproc), cwd=REPO, env=python_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_step(run, 3, proc)
    proc.send_signal(sig)  # under torchrun: to the agent, which forwards it to every worker
    out, err = proc.communicate(timeout=300)
    rows = read_metrics(run / "metrics.jsonl")
    stopped = [r for r in rows if r["kind"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["signal"] == sig.name, (out, err)
    step = stopped[0]["step"]
    assert 3 <= step < 300
    if nproc == 1:
        assert proc.returncode == 75, err
        assert f"stopped by {sig.name} after step {step}: its checkpoint {run / 'ckpt.pt'} (step {step}) is written" in err, err
        assert "train.resume=true" in err and "Traceback" not in err
    assert ckpt.load_checkpoint(run)["step"] == step  # ckpt.pt, or FSDP's ckpt.dcp of every rank's shard
    resumed = _run([*args, "train.resume=true"], nproc)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(whole), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a), "the stopped-and-resumed run differs from the uninterrupted one"
    final = [r["val_loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert final == [r["val_loss"] for r in read_metrics(whole / "metrics.jsonl") if r["kind"] == "eval"][-1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_saves_the_current_step_and_the_resumed_run_is_the_same(byte_data, tmp_path, sig):
    _stop_and_resume(byte_data, tmp_path, sig, nproc=1)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_sigterm_to_torchrun_saves_on_every_rank_and_resumes_the_same_run(byte_data, tmp_path, parallel):
    _stop_and_resume(byte_data, tmp_path, signal.SIGTERM, nproc=2, extra=("optim=adamw", f"train.parallel={parallel}"))


@pytest.mark.parametrize("first,second,grace,exits", [
    (signal.SIGINT, signal.SIGINT, 5.0, True),  # Ctrl-C twice: out now
    (signal.SIGTERM, signal.SIGINT, 5.0, True),  # another signal: out now
    (signal.SIGTERM, signal.SIGTERM, 0.0, True),  # SIGTERM again, later: out now
    (signal.SIGTERM, signal.SIGTERM, 5.0, False),  # the same SIGTERM delivered twice at once: still one request
    (signal.SIGUSR1, signal.SIGUSR1, 5.0, False),
])
def test_a_second_signal_exits_at_once(monkeypatch, first, second, grace, exits):
    import sophia_train.distributed.stop_signals as stop_signals

    monkeypatch.setattr(stop_signals, "REPEAT_GRACE_S", grace)
    signals = stop_signals.StopSignals(announce=False).install()
    try:
        os.kill(os.getpid(), first)
        assert signals.received == first.name  # the first only asks the loop to stop
        if exits:
            with pytest.raises(SystemExit) as exited:
                os.kill(os.getpid(), second)
            assert exited.value.code == 128 + second
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a third one acts as if we never caught any
        else:
            os.kill(os.getpid(), second)
            assert signals.received == first.name
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _wait_gone(pids: list[int], timeout: float = 90) -> list[int]:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text()]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


@pytest.mark.slow
def test_workers_of_a_killed_torchrun_agent_stop_instead_of_training_on(byte_data, tmp_path):
    run = tmp_path / "run"
    args = tiny_overrides(byte_data, run, "train.max_steps=100000", "train.ckpt_interval=0", "optim=adamw", optim="adamw")
    agent = subprocess.Popen(_command(args, 2), cwd=REPO, env=python_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_step(run, 3, agent)
        workers = _children(agent.pid)
        assert len(workers) == 2
        agent.kill()  # SIGKILL: the agent forwards nothing
        agent.wait()
        assert _wait_gone(workers) == [], "workers kept training after their torchrun agent died"
        stopped = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "stopped"]
        assert len(stopped) == 1 and stopped[0]["signal"] == "SIGTERM"  # they saved and stopped, as on a forwarded SIGTERM
        assert ckpt.load_checkpoint(run)["step"] == stopped[0]["step"]
    finally:
        for pid in _children(agent.pid) if agent.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
        agent.kill()


FAKE_SRUN = """#!/bin/bash
echo "srun $*" >> "$LOG"
[ -n "${FINISH:-}" ] && exit 0
trap 'echo "srun got USR1" >> "$LOG"; exit 75' USR1
while true; do sleep 0.05; done
"""
FAKE_SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$LOG"
[ "$1" = show ] && echo node1
exit 0
"""


def _fake_slurm(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm.log"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    environ = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "SLURM_JOB_ID": "42",
               "SLURM_JOB_NODELIST": "node1", "SLURM_JOB_NUM_NODES": "1", **env}
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "slurm" / "train.sbatch"), "+model=gpt2_small"], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, log


def test_the_sbatch_script_forwards_the_time_limit_signal_and_requeues(tmp_path):
    import time

    proc, log = _fake_slurm(tmp_path)
    end = time.monotonic() + 30
    while not (log.exists() and "srun " in log.read_text()) and time.monotonic() < end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@300 sends before the time limit
    out, _ = proc.communicate(timeout=30)
    lines = log.read_text().splitlines()
    assert proc.returncode == 0, out
    srun = next(line for line in lines if line.startswith("srun "))
    assert "--signals_to_handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1" in srun and "run_name=slurm-42" in srun
    assert "train.resume=true" not in srun  # the first attempt starts the run
    assert "srun got USR1" in lines and lines[-1] == "scontrol requeue 42"
    script = (REPO / "scripts" / "slurm" / "train.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@" in script and "#SBATCH --requeue" in script

    (tmp_path / "again").mkdir()
    proc, log = _fake_slurm(tmp_path / "again", SLURM_RESTART_COUNT="1", FINISH="1")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    srun = next(x for x in log.read_text().splitlines() if x.startswith("srun "))
    assert srun.endswith("train.resume=true")  # the requeued attempt continues the run


# --- 7. a resume refuses another corpus; the same data in another folder is fine -------------------
def test_a_resume_on_other_data_is_refused_and_the_same_data_moved_is_not(byte_data, tmp_path):
    import shutil

    import numpy as np

    args = tiny_overrides(byte_data, tmp_path / "run", "train.max_steps=8")
    Trainer(compose([*args, "train.stop_after_step=4"])).fit()
    assert ckpt.load_checkpoint(tmp_path / "run" / "ckpt.pt")["dataset"]["bins_sha256"]
    moved = tmp_path / "moved"
    shutil.copytree(byte_data, moved)
    tr = Trainer(compose([*args, f"data.dir={moved}", "train.resume=true", "train.stop_after_step=6"]))  # free
    tr.fit()
    other = tmp_path / "other"
    shutil.copytree(byte_data, other)
    ids = np.fromfile(other / "train.bin", dtype=np.uint16)
    ids[-100:] = ids[-100:][::-1]  # same size, counts and meta.json: only the last MB differs
    ids.tofile(other / "train.bin")
    saved = (tmp_path / "run" / "ckpt.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"was trained on other data than data.dir=.*other holds \(the .bin files' contents "
                                          r"differ\).*train.resume_allow=\[data\]"):
        Trainer(compose([*args, f"data.dir={other}", "train.resume=true"]))
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() == saved
    Trainer(compose([*args, f"data.dir={other}", "train.resume=true", "train.resume_allow=[data]"])).fit()  # named: allowed


# --- 8. checkpoint integrity: flipped bytes, empty files, missing parts, wrong shapes -----------------
def _saved_run(byte_data, folder: Path) -> list[str]:
    args = tiny_overrides(byte_data, folder, "train.max_steps=8")
    Trainer(compose([*args, "train.stop_after_step=4"])).fit()
    return args


def _refused(args: list[str], match: str, folder: Path) -> None:
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=match):
        Trainer(compose([*args, "train.resume=true"])).fit()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name in before} == before


def test_flipped_bytes_in_a_checkpoint_are_detected(byte_data, tmp_path):
    args = _saved_run(byte_data, tmp_path)
    path = tmp_path / "ckpt.pt"
    state = ckpt.load_checkpoint(path)
    blob = bytearray(path.read_bytes())
    # 64 bytes in the middle of one optimizer tensor's record: torch.load alone loads the changed tensor silently
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size // 2
    blob[start:start + 64] = bytes(b ^ 0x5A for b in blob[start:start + 64])
    path.write_bytes(bytes(blob))
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == state["step"]  # torch itself sees nothing wrong
    _refused(args, r"is damaged: its record .*data/\d+ no longer matches the checksum stored when it was saved", tmp_path)


@pytest.mark.parametrize("damage, match", [
    ("empty", r"is empty \(0 bytes\)"),
    ("truncated", r"cannot be read as a whole checkpoint file"),
    ("no_optimizer", r"cannot be resumed: it has no optimizer state"),
    ("negative_step", r"cannot be resumed: its step is -3, not a count of steps"),
    ("wrong_weight_shape", r"does not fit this run's model \(.*size mismatch"),
    ("wrong_state_shape", r"holds optimizer state 'm' of shape \[3\] for a parameter of shape"),
])
def test_a_malformed_checkpoint_is_one_paragraph_and_left_untouched(byte_data, tmp_path, damage, match):
    args = _saved_run(byte_data, tmp_path)
    path = tmp_path / "ckpt.pt"
    state = ckpt.load_checkpoint(path)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        if damage == "no_optimizer":
            del state["optimizer"]
        elif damage == "negative_step":
            state["step"] = -3
        elif damage == "wrong_weight_shape":
            key = next(k for k, v in state["model"].items() if v.dim() == 2)
            state["model"][key] = torch.zeros(3, 3)
        else:
            first = next(iter(state["optimizer"]["state"]))
            state["optimizer"]["state"][first]["m"] = torch.zeros(3)
        ckpt.save_checkpoint(state, path)  # a well-formed file with bad contents: checksums match
    _refused(args, match, tmp_path)


@pytest.mark.slow
def test_a_damaged_shard_of_a_sharded_checkpoint_is_detected(byte_data, tmp_path):
    from sophia_train.checkpoint import sharded as sharded

    args = tiny_overrides(byte_data, tmp_path, "train.max_steps=8", "train.parallel=fsdp", optim="adamw")
    Trainer(compose([*args, "train.stop_after_step=4"])).fit()
    folder = sharded.latest(tmp_path / "ckpt.dcp")
    sums = sharded.load_meta(folder)["shard_crc32"]
    assert ".metadata" in sums and any(n.endswith(".distcp") for n in sums)
    shard = folder / next(n for n in sums if n.endswith(".distcp"))
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    shard.write_bytes(bytes(blob))
    with pytest.raises(ConfigError, match=r"the sharded checkpoint .* is damaged: __0_0.distcp no longer match"):
        Trainer(compose([*args, "train.resume=true"]))
    with pytest.raises(ConfigError, match="is damaged"):
        ckpt.load_checkpoint(tmp_path)  # the one-file view (sample, export, init_from) checks too


@pytest.mark.slow
def test_workers_of_a_killed_benchmark_stop_instead_of_training_on(byte_data, tmp_path):
    out = tmp_path / "bench"
    parent = subprocess.Popen([PYTHON, "-m", "sophia_train.studies.benchmark", "--profile", "quick", "--out", str(out), "--data-dir",
                               str(byte_data), "--workers", "2", "--threads", "1"], cwd=REPO, env=python_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        end = time.monotonic() + 120
        while time.monotonic() < end and not list(out.glob("runs/*/metrics.jsonl")):
            assert parent.poll() is None
            time.sleep(0.1)
        workers = _children(parent.pid)
        assert len(workers) == 2
        parent.kill()
        parent.wait()
        assert _wait_gone(workers) == [], "benchmark workers kept training after their parent died"
    finally:
        parent.kill()


@pytest.mark.slow
def test_a_full_disk_during_a_sharded_save_gives_the_disk_full_message(byte_data, tmp_path, monkeypatch):
    import torch.distributed.checkpoint as dcp

    import sophia_train.checkpoint.sharded as sharded

    args = tiny_overrides(byte_data, tmp_path, "train.max_steps=8", "train.ckpt_interval=2", "train.parallel=fsdp", optim="adamw")
    Trainer(compose([*args, "train.stop_after_step=4"])).fit()
    before = sharded.latest(tmp_path / "ckpt.dcp")

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(dcp, "save", full)
    monkeypatch.setattr(sharded, "disk_is_full", lambda folder, margin=1 << 20: True)
    with pytest.raises(ConfigError, match=r"could not write the checkpoint of step 6 to .*ckpt.dcp: the disk is full\. .*"
                                          r"the last checkpoint \(.*ckpt.dcp, step 4\) is intact"):
        Trainer(compose([*args, "train.resume=true"])).fit()
    assert sharded.latest(tmp_path / "ckpt.dcp") == before and not list((tmp_path / "ckpt.dcp").glob("*.tmp"))


# --- a resume from the run folder alone continues with the saved config -----------------------------
def test_a_resume_from_the_folder_alone_continues_the_run_as_configured(byte_data, tmp_path):
    setting = ["+model=nano", "optim=adamw", "optim.lr=2e-3", "optim.betas=[0.8,0.9]", f"data.dir={byte_data}",
               "train.batch_size=4", "train.max_steps=12", "train.warmup_steps=2", "train.eval_interval=6", "train.eval_iters=2",
               "train.plot=false", "train.threads=1", "train.seed=5"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert cli(*setting, f"train.out_dir={whole}").returncode == 0
    assert cli(*setting, f"train.out_dir={run}", "train.stop_after_step=5").returncode == 0
    out = cli(f"train.out_dir={run}", "train.resume=true")  # no +model, optimizer or flags: the folder says
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming from step 5" in out.stdout and "optim adamw" in out.stdout
    a, b = ckpt.load_checkpoint(whole / "ckpt.pt"), ckpt.load_checkpoint(run / "ckpt.pt")
    assert b["step"] == 12 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    changed = cli(f"train.out_dir={run}", "train.resume=true", "train.max_steps=20", "optim.lr=1e-3")
    assert changed.returncode == 2 and "optim.lr: checkpoint 0.002, now 0.001" in changed.stderr, changed.stderr[-2000:]
