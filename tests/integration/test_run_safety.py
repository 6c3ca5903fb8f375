"""The run folder's seams: no non-finite checkpoint, skipped bad steps, one run per folder, resume = same run."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time

import pytest
import torch

from conftest import PYTHON, REPO, compose, python_env, tiny_overrides
from sophia_train import checkpoint as ckpt
from sophia_train.config import ConfigError, TrainingDiverged
from sophia_train.metrics import read_metrics
from sophia_train.trainer import Trainer


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "sophia_train", *args], cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=timeout)


def checkpoint_is_finite(path) -> bool:
    state = ckpt.load_checkpoint(path)
    tensors = list(state["model"].values()) + [v for st in state["optimizer"]["state"].values() for v in st.values() if torch.is_tensor(v)]
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors if t.is_floating_point())


# --- 3. never a NaN checkpoint -------------------------------------------------------------------
DIVERGING = ("optim=adamw", "train.warmup_steps=0", "train.ckpt_interval=1", "train.log_interval=1", "train.max_steps=40")


def test_the_issue_command_leaves_no_nan_checkpoint_and_says_which_is_good(byte_data, tmp_path):
    args = tiny_overrides(byte_data, tmp_path, "optim.lr=1000", *DIVERGING, optim="adamw")
    out = cli(*args)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr and "training diverged" in out.stderr
    if (tmp_path / "ckpt.pt").exists():
        assert checkpoint_is_finite(tmp_path / "ckpt.pt")
        step = ckpt.load_checkpoint(tmp_path / "ckpt.pt")["step"]
        assert f"(step {step}) is intact" in out.stderr.replace(f"{tmp_path / 'ckpt.pt'}, ", "(")
    else:
        assert "no checkpoint was written" in out.stderr
    assert not list(tmp_path.glob("ckpt.pt.tmp*"))


def test_a_diverged_run_resumes_from_its_last_good_checkpoint_with_a_sane_lr(byte_data, tmp_path):
    # with a 20-step warmup the LR reaches the blow-up region after a few good checkpoints; at peak 100 the
    # state had been wrecked for ~10 steps before the first NaN on some CPUs (no sane LR recovered it), at
    # 1000 the blow-up comes within a few steps everywhere
    args = tiny_overrides(byte_data, tmp_path, *(a for a in DIVERGING if "warmup" not in a), "optim.lr=1000", "train.warmup_steps=20", optim="adamw")
    with pytest.raises(TrainingDiverged, match=r"the last checkpoint \(.*, step (\d+)\) is intact") as err:
        Trainer(compose(args)).fit()
    state = ckpt.load_checkpoint(tmp_path / "ckpt.pt")
    assert f"step {state['step']}) is intact" in str(err.value) and state["step"] > 1
    assert checkpoint_is_finite(tmp_path / "ckpt.pt")
    tr = Trainer(compose([*args, "optim.lr=1e-3", "train.resume=true", "train.resume_allow=[optim.lr]"]))
    assert tr.start_step == state["step"]
    summary = tr.fit()
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train" and r["step"] > state["step"]]
    assert summary["step"] == 40 and losses and all(math.isfinite(x) for x in losses)
    assert math.isfinite(summary["final_val_loss"])


class PoisonedLoss(torch.nn.Module):
    """Wraps the training model; the losses of the given (1-based) calls become NaN."""

    def __init__(self, inner, bad_calls):
        super().__init__()
        self.inner, self.bad, self.calls = inner, set(bad_calls), 0

    def forward(self, x, y):
        logits, loss = self.inner(x, y)
        self.calls += 1
        return logits, (loss * float("nan") if self.calls in self.bad else loss)


def test_skip_nonfinite_skips_bad_steps_and_counts_them(byte_data, tmp_path):
    tr = Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.skip_nonfinite=true", "train.ckpt_interval=4", optim="adamw")))
    tr.train_model = PoisonedLoss(tr.train_model, bad_calls={4, 5})  # steps 4 and 5 (one micro-batch per step)
    summary = tr.fit()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    assert sum(r["skipped_steps"] for r in train) == 2 and summary["skipped_steps"] == 2
    assert all(math.isfinite(r["loss"]) for r in train if "loss" in r)
    assert checkpoint_is_finite(tmp_path / "ckpt.pt") and ckpt.load_checkpoint(tmp_path / "ckpt.pt")["step"] == 20


def test_too_many_skips_in_a_row_stop_the_run(byte_data, tmp_path):
    tr = Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.skip_nonfinite=true", "train.max_skips_in_row=3", optim="adamw")))
    tr.train_model = PoisonedLoss(tr.train_model, bad_calls={6, 7, 8})
    with pytest.raises(TrainingDiverged, match="3 steps in a row up to step 8"):
        tr.fit()


def test_without_skipping_a_nan_loss_between_checkpoints_is_never_saved(byte_data, tmp_path):
    tr = Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.ckpt_interval=5", "train.log_interval=100", optim="adamw")))
    tr.train_model = PoisonedLoss(tr.train_model, bad_calls={8})
    with pytest.raises(TrainingDiverged, match=r"step 5\) is intact"):
        tr.fit()
    assert ckpt.load_checkpoint(tmp_path / "ckpt.pt")["step"] == 5 and checkpoint_is_finite(tmp_path / "ckpt.pt")


# --- 4. one run per folder -------------------------------------------------------------------------
def test_a_second_run_in_the_same_folder_is_refused_naming_the_holder(byte_data, tmp_path):
    args = tiny_overrides(byte_data, tmp_path, "train.max_steps=100000", "train.log_interval=50")
    first = subprocess.Popen([PYTHON, "-m", "sophia_train", *args], cwd=REPO, env=python_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
            time.sleep(0.2)
        assert (tmp_path / "metrics.jsonl").exists(), "the first run did not start"
        second = cli(*args, "train.max_steps=5", "train.overwrite=true")
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is in use by another run (PID {first.pid}" in second.stderr, second.stderr
        # killed with SIGKILL: the OS drops the lock, and the folder can be resumed at once
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    (tmp_path / "ckpt.pt.tmp.12345.deadbeef").write_bytes(b"partial")  # what a kill during a save leaves
    third = cli(*tiny_overrides(byte_data, tmp_path, "train.max_steps=3", "train.overwrite=true"))
    assert third.returncode == 0, third.stderr
    assert "removed ckpt.pt.tmp.12345.deadbeef" in third.stdout and not list(tmp_path.glob("ckpt.pt.tmp*"))
    starts = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "start"]
    assert len(starts) == 1
    assert not (tmp_path / ckpt.LOCK_NAME).exists()  # a finished run leaves no lock file behind (the killed one's was taken over)


def test_a_lock_released_between_anothers_open_and_lock_is_taken_on_the_new_file(tmp_path, monkeypatch):
    """The holder removes the lock file as it releases; a run that had opened the old file must not end up
    holding a lock on a file no longer in the folder while a third run locks a new one."""
    import fcntl

    from sophia_train.checkpoint import RunFolderLock

    first = RunFolderLock(tmp_path).acquire()
    real_flock, released = fcntl.flock, []

    def flock(fd, op):
        if op & fcntl.LOCK_EX and not released:
            released.append(True)
            first.release()  # the first run ends right between the second's open() and flock()
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    second = RunFolderLock(tmp_path).acquire()
    monkeypatch.undo()
    assert released and os.fstat(second._fd).st_ino == os.stat(tmp_path / ckpt.LOCK_NAME).st_ino
    with pytest.raises(ConfigError, match="is in use by another run"):
        RunFolderLock(tmp_path).acquire()
    second.release()
    assert not (tmp_path / ckpt.LOCK_NAME).exists()


# --- 5. resume is the same run --------------------------------------------------------------------
@pytest.mark.parametrize("change", ["train.seed=7", "train.batch_size=2", "optim.lr=1e-3", "optim.rho=0.1", "train.max_steps=30",
                                    "train.warmup_steps=3", "optim.betas=[0.9,0.99]"])
def test_resume_refuses_a_changed_run_with_a_diff(byte_data, tmp_path, change):
    Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=20", "train.stop_after_step=4"))).fit()
    key = change.split("=")[0]
    with pytest.raises(ConfigError, match=rf"differ from its checkpoint \({key}: checkpoint .*, now .*train.resume_allow=\[{key}\]"):
        Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=20", change, "train.resume=true")))
    before = len(read_metrics(tmp_path / "metrics.jsonl"))
    assert before > 0  # the refused resume touched nothing
    assert ckpt.load_checkpoint(tmp_path / "ckpt.pt")["step"] == 4


def test_resume_allows_named_changes_and_logs_them(byte_data, tmp_path, capsys):
    Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=10", "train.stop_after_step=4"))).fit()
    tr = Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=20", "train.resume=true", "train.resume_allow=[train.max_steps]",
                                        "train.eval_iters=3", "train.log_interval=2")))  # reporting settings are free
    tr.fit()
    assert "settings changed on resume (train.resume_allow): train.max_steps: 10 -> 20" in capsys.readouterr().out
    resumed = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "resume"]
    assert resumed == [{"kind": "resume", "step": 4, "changes": {"train.max_steps": [10, 20]}}]
    with pytest.raises(ConfigError, match="train.resume_allow names optim.rhoo, which are not config keys"):
        Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=20", "train.resume=true", "train.resume_allow=[optim.rhoo]")))


def test_resuming_a_finished_run_says_so_and_exits_0(byte_data, tmp_path):
    args = tiny_overrides(byte_data, tmp_path, "train.max_steps=4")
    assert cli(*args).returncode == 0
    rows = read_metrics(tmp_path / "metrics.jsonl")
    out = cli(*args, "train.resume=true")
    assert out.returncode == 0, out.stderr
    assert "nothing to do" in out.stdout and "already at step 4" in out.stdout
    assert read_metrics(tmp_path / "metrics.jsonl") == rows  # no second end row
