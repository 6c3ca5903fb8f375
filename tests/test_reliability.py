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
