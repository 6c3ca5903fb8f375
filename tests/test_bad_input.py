"""Bad input gets one clear message before any heavy work, never a traceback, never a lost checkpoint."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from conftest import PYTHON, REPO, compose, python_env, tiny_overrides
from sophia_train.config import ConfigError
from sophia_train.distributed import DistInfo
from sophia_train.trainer import Trainer


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "sophia_train", *args], cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["+model=gpt5"], "Could not find 'model/gpt5'"),
        (["+model=tiny", "optim=adamx"], "Could not find 'optim/adamx'"),
        (["+model=tiny", "optim.lr=-1"], "optim.lr must be a positive number"),
        (["+model=tiny", "train.seq_len=256"], "larger than the block size of model tiny (128)"),
        (["+model=tiny", "data.dir=/nonexistent/owt"], "is not prepared"),
        (["model=tiny"], "+model=tiny"),
    ],
)
def test_cli_errors_are_one_clear_paragraph(args, message):
    out = cli(*args)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def expect_error(overrides, match, info=None):
    with pytest.raises(ConfigError, match=match):
        Trainer(compose(overrides), info)


def test_negative_and_impossible_values(byte_data, tmp_path):
    expect_error(tiny_overrides(byte_data, tmp_path, "optim.lr=-0.1"), "optim.lr must be a positive")
    expect_error(tiny_overrides(byte_data, tmp_path, "train.batch_size=0"), "train.batch_size must be positive")
    expect_error(tiny_overrides(byte_data, tmp_path, "optim.rho=0"), "optim.rho must be positive")
    expect_error(tiny_overrides(byte_data, tmp_path, "train.warmup_steps=100"), "warmup_steps")
    expect_error(tiny_overrides(byte_data, tmp_path, "model.n_head=3"), "not divisible by n_head")
    expect_error(tiny_overrides(byte_data, tmp_path, "train.seq_len=64"), "larger than the block size of model nano")


def test_batch_not_divisible_across_ranks(byte_data, tmp_path):
    overrides = tiny_overrides(byte_data, tmp_path, "train.grad_accum=3")
    expect_error(overrides, "cannot be split evenly over 2 processes", DistInfo(rank=0, local_rank=0, world_size=2))


def copy_data(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_truncated_data_file(byte_data, tmp_path):
    d = copy_data(byte_data, tmp_path / "data")
    with open(d / "train.bin", "r+b") as f:
        f.truncate(1001)
    expect_error(tiny_overrides(d, tmp_path / "run"), "truncated or corrupt")


def test_corrupt_meta(byte_data, tmp_path):
    d = copy_data(byte_data, tmp_path / "data")
    (d / "meta.json").write_text("{not json")
    expect_error(tiny_overrides(d, tmp_path / "run"), "meta.json is corrupt")


def test_token_ids_outside_vocabulary(byte_data, tmp_path):
    d = copy_data(byte_data, tmp_path / "data")
    meta = json.loads((d / "meta.json").read_text())
    meta["vocab_size"] = 50
    (d / "meta.json").write_text(json.dumps(meta))
    expect_error(tiny_overrides(d, tmp_path / "run"), "outside the vocabulary")


def test_dataset_too_small_for_sequence(byte_data, tmp_path):
    from sophia_train.data import write_meta, write_split
    import numpy as np

    d = tmp_path / "small"
    d.mkdir()
    for split in ("train", "val"):
        write_split(d / f"{split}.bin", np.arange(20, dtype=np.uint16))
    write_meta(d, 256, "byte", {"train": 20, "val": 20}, "test")
    expect_error(tiny_overrides(d, tmp_path / "run"), "too few for sequences of 32 tokens")


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_of_another_model_is_refused_and_kept(byte_data, tmp_path):
    Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=2"))).fit()
    before = digest(tmp_path / "ckpt.pt")
    expect_error(tiny_overrides(byte_data, tmp_path, "train.max_steps=2", "train.resume=true", "model.n_embd=64"),
                 "belongs to another model .*n_embd: checkpoint 32 vs now 64")
    expect_error(tiny_overrides(byte_data, tmp_path, "train.max_steps=2", "train.resume=true", optim="adamw"),
                 "trained with optim=sophia_g")
    expect_error(tiny_overrides(byte_data, tmp_path, "train.max_steps=2"), "already holds a checkpoint")
    assert digest(tmp_path / "ckpt.pt") == before


def test_corrupt_checkpoint_is_reported_and_untouched(byte_data, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint at all")
    before = digest(tmp_path / "ckpt.pt")
    expect_error(tiny_overrides(byte_data, tmp_path, "train.resume=true"), "cannot be read")
    assert digest(tmp_path / "ckpt.pt") == before


def test_resume_without_checkpoint(byte_data, tmp_path):
    expect_error(tiny_overrides(byte_data, tmp_path / "fresh", "train.resume=true"), "nothing to resume")


def test_overwrite_flag_starts_afresh(byte_data, tmp_path):
    Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=2"))).fit()
    summary = Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=3", "train.overwrite=true"))).fit()
    assert summary["step"] == 3
