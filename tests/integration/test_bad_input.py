"""Bad input gets one clear message before any heavy work, never a traceback, never a lost checkpoint."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess

import pytest
import torch

from conftest import PYTHON, REPO, compose, python_env, tiny_overrides
from sophia_train import checkpoint as ckpt
from sophia_train.config import ConfigError, validate
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
    expect_error(tiny_overrides(byte_data, tmp_path, "optim.denominator=sqrt"), "optim.denominator must be one of official, max, max_sqrt")
    expect_error(tiny_overrides(byte_data, tmp_path, "train.warmup_steps=100"), "warmup_steps")
    expect_error(tiny_overrides(byte_data, tmp_path, "model.n_head=3"), "not divisible by n_head")
    expect_error(tiny_overrides(byte_data, tmp_path, "train.seq_len=64"), "larger than the block size of model nano")


def test_batch_not_divisible_across_ranks(byte_data, tmp_path):
    overrides = tiny_overrides(byte_data, tmp_path, "train.global_batch=12")  # 3 micro-batches of 4
    expect_error(overrides, "cannot be split evenly over 2 processes", DistInfo(rank=0, local_rank=0, world_size=2))
    # grad_accum counts micro-batches per process: any value splits over any process count
    cfg = compose(tiny_overrides(byte_data, tmp_path, "train.grad_accum=3"))
    validate(cfg, world_size=2)


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
    import numpy as np

    from sophia_train.data import write_meta, write_split

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
    expect_error(tiny_overrides(byte_data, tmp_path, "train.max_steps=2", "train.eval_only=true", "model.n_embd=64"),
                 "belongs to another model .*n_embd: checkpoint 32 vs now 64.*eval_only needs the model it was trained with")
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


# --- token ids anywhere in the file -----------------------------------------------------------------
def write_tokens(d, train, val, vocab=256, **meta_extra):
    import numpy as np

    from sophia_train.data import write_meta, write_split

    d.mkdir(parents=True)
    write_split(d / "train.bin", np.asarray(train, dtype=np.uint16))
    write_split(d / "val.bin", np.asarray(val, dtype=np.uint16))
    write_meta(d, vocab, "byte", {"train": len(train), "val": len(val)}, "test", **meta_extra)
    return d


def test_a_bad_token_id_late_in_the_file_is_found_before_training(tmp_path):
    import numpy as np

    train = np.random.default_rng(0).integers(0, 256, (1 << 20) + 5000)
    train[-7] = 300  # past the first 2^20 tokens, where the old check stopped looking
    d = write_tokens(tmp_path / "d", train, np.arange(200) % 256)
    expect_error(tiny_overrides(d, tmp_path / "run"), "train.bin holds token id 300, outside the vocabulary of 256")
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_prepare_records_the_largest_token_id_and_open_checks_it(byte_data, tmp_path):
    meta = json.loads((byte_data / "meta.json").read_text())
    assert 0 < meta["max_token_id"] < 256
    d = write_tokens(tmp_path / "d", [1, 2, 3] * 100, [4, 5] * 100, max_token_id=3)
    expect_error(tiny_overrides(d, tmp_path / "run"), "val.bin holds token id 5, above the max_token_id 3 that meta.json recorded")
    d2 = write_tokens(tmp_path / "d2", [1, 2, 3] * 100, [4, 5] * 100, max_token_id=999)
    expect_error(tiny_overrides(d2, tmp_path / "run"), "holds token id 999, outside the vocabulary of 256")


# --- the run folder --------------------------------------------------------------------------------
def test_out_dir_that_is_a_file_or_lies_below_one(byte_data, tmp_path):
    f = tmp_path / "afile"
    f.write_text("precious")
    expect_error(tiny_overrides(byte_data, f), r"afile is a file, not a folder")
    expect_error(tiny_overrides(byte_data, f / "run"), r"afile is a file, not a folder")
    assert f.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_dir(byte_data, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        expect_error(tiny_overrides(byte_data, ro / "run"), "cannot create the run folder")
        expect_error(tiny_overrides(byte_data, ro), "is not writable")
    finally:
        ro.chmod(0o755)


def test_out_dir_error_from_the_command_line_is_one_paragraph(byte_data, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    out = cli(*tiny_overrides(byte_data, f / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "is a file, not a folder" in out.stderr


# --- devices and values -----------------------------------------------------------------------------
@pytest.mark.parametrize("device, message", [
    ("cuda", "asks for CUDA, but this torch"),
    ("tpu", "is not a device"),
    ("meta", "meta is not supported"),
])
def test_impossible_devices(byte_data, tmp_path, device, message):
    if device == "cuda" and torch_has_cuda():
        pytest.skip("this machine has a GPU")
    out = cli(*tiny_overrides(byte_data, tmp_path / "run", f"train.device={device}"))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("optim", ["sophia_g", "adamw", "s3", "adahessian"])
def test_non_positive_eps(byte_data, tmp_path, optim):
    expect_error(tiny_overrides(byte_data, tmp_path, "optim.eps=0", optim=optim), "optim.eps must be a positive number")
    expect_error(tiny_overrides(byte_data, tmp_path, "optim.eps=-1e-8", optim=optim), "optim.eps must be a positive number")


def test_negative_threads(byte_data, tmp_path):
    expect_error(tiny_overrides(byte_data, tmp_path, "train.threads=-2"), "train.threads must be >= 1")


# --- only real choices -----------------------------------------------------------------------------
@pytest.mark.parametrize("choice", ["optim=sophia_schema", "optim=torch_schema", "data=data_schema", "+model=model_schema"])
def test_internal_schemas_are_not_choices(choice):
    args = ["+model=tiny", choice] if not choice.startswith("+model") else [choice]
    out = cli(*args)
    assert out.returncode != 0 and "Could not find" in out.stderr and "Traceback" not in out.stderr, out.stderr
    group = choice.lstrip("+").split("=")[0]
    listed = out.stderr.split(f"Available options in '{group}':", 1)[1]
    assert "_schema" not in listed


# --- prepare_data.py --------------------------------------------------------------------------------
def prepare(*args):
    return subprocess.run([PYTHON, "scripts/prepare_data.py", *args], cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("content, args, message", [
    ("", ["corpus", "--corpus-file", "{f}"], "holds no text"),
    ("   \n\n  \n", ["corpus", "--corpus-file", "{f}"], "holds no text"),
    ("Just one paragraph of text.\nStill the same paragraph.\n", ["corpus", "--corpus-file", "{f}"], "holds 1 document(s)"),
    (None, ["corpus", "--corpus-file", "{f}"], "does not exist"),
    (None, ["files", "x", "{f}"], "input files not found"),
    ("a\n\nb\n\nc\n", ["corpus", "--corpus-file", "{f}", "--val-fraction", "1.5"], "must be a number strictly between 0 and 1"),
    ("a\n\nb\n\nc\n", ["corpus", "--corpus-file", "{f}", "--val-fraction", "0"], "must be a number strictly between 0 and 1"),
])
def test_prepare_data_errors(tmp_path, content, args, message):
    f = tmp_path / "input.txt"
    if content is not None:
        f.write_text(content)
    out = prepare(*[a.format(f=f) for a in args], "--out", str(tmp_path / "out"))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "out" / "meta.json").exists()


def test_prepare_data_unsupported_extension(tmp_path):
    f = tmp_path / "book.pdf"
    f.write_bytes(b"%PDF-1.4")
    out = prepare("files", "book", str(f), "--out", str(tmp_path / "out"))
    assert out.returncode == 2 and "unsupported or mixed file types .pdf" in out.stderr and "Traceback" not in out.stderr


def test_prepare_data_non_utf8_is_refused_or_replaced_and_counted(tmp_path):
    f = tmp_path / "latin1.txt"
    paragraphs = [f"Paragraph {i}: caf\xe9 cr\xe8me br\xfbl\xe9e." for i in range(30)]
    f.write_bytes("\n\n".join(paragraphs).encode("latin-1"))
    out = prepare("files", "latin", str(f), "--out", str(tmp_path / "out"), "--tokenizer", "byte")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "is not valid UTF-8: 120 bytes are not, the first at byte offset 16" in out.stderr, out.stderr
    assert not (tmp_path / "out").exists()
    ok = prepare("files", "latin", str(f), "--out", str(tmp_path / "out"), "--tokenizer", "byte", "--encoding-errors", "replace")
    assert ok.returncode == 0, ok.stderr
    assert "replacing 120 bytes that are not UTF-8" in ok.stderr
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["num_tokens"]["train"] > 0


def test_invalid_utf8_counts_across_chunk_boundaries(tmp_path):
    from sophia_train.data.prepare import invalid_utf8

    f = tmp_path / "t.txt"
    data = ("é" * 10).encode() + b"\xff" + ("ü" * 3).encode() + b"\xfe\xfd"
    f.write_bytes(data)
    for chunk in (1, 2, 3, 7, 1 << 20):  # multi-byte characters split between reads must not count
        assert invalid_utf8(f, chunk) == (3, 20)


# --- OpenWebText: a partial or unreachable source -------------------------------------------------
def test_openwebtext_partial_source_is_refused_or_flagged(tmp_path):
    src = tmp_path / "owt_partial"
    src.mkdir()
    (src / "train.jsonl").write_text("".join(json.dumps({"text": f"Document number {i}. " * 20}) + "\n" for i in range(40)))
    out = prepare("openwebtext", "--hub-id", str(src), "--revision", "", "--tokenizer", "byte", "--out", str(tmp_path / "out"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "holds 40 documents, but OpenWebText has 8,013,769" in out.stderr and not (tmp_path / "out").exists()
    ok = prepare("openwebtext", "--hub-id", str(src), "--revision", "", "--tokenizer", "byte", "--out", str(tmp_path / "out"), "--allow-partial")
    assert ok.returncode == 0, ok.stderr
    assert "WARNING" in ok.stderr and "partial source" in ok.stderr
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["partial"] is True and meta["documents"] == 40 and meta["expected_documents"] == 8013769


def test_openwebtext_offline_is_one_paragraph(tmp_path):
    env = dict(python_env(), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([PYTHON, "scripts/prepare_data.py", "openwebtext", "--out", str(tmp_path / "out")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "could not load OpenWebText from 'Skylion007/openwebtext'" in out.stderr and "Nothing was written" in out.stderr
    assert not (tmp_path / "out").exists()


# --- disk full / unwritable while running ---------------------------------------------------------
def test_a_failed_save_keeps_the_previous_checkpoint_and_removes_its_temp_file(byte_data, tmp_path, monkeypatch):
    Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=4"))).fit()
    good = (tmp_path / "ckpt.pt").read_bytes()

    def disk_full(state, f):
        f.write(b"x" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    tr = Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=8", "train.resume=true", "train.resume_allow=[train.max_steps]")))
    with pytest.raises(ConfigError, match=r"could not write the checkpoint of step 8 .*the disk is full.*step 4\) is intact"):
        tr.fit()
    assert (tmp_path / "ckpt.pt").read_bytes() == good and not list(tmp_path.glob("ckpt.pt.tmp*"))


def test_unwritable_run_folder_is_refused_before_any_step(byte_data, tmp_path, monkeypatch):
    """As root chmod does not stop writes, so the OS refusal is simulated where the run folder is first written."""
    real_open = os.open

    def refuse(path, *a, **kw):
        if str(path).endswith(ckpt.LOCK_NAME):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", refuse)
    expect_error(tiny_overrides(byte_data, tmp_path / "run"), r"run folder .* is not writable \(Permission denied\)")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# --- an unknown field is refused in every spelling, exit 2, naming the closest field ------------------
@pytest.mark.parametrize("typo, closest", [("optim.rhoo=1", "optim.rho"), ("+optim.rhoo=1", "optim.rho"),
                                           ("++optim.rhoo=1", "optim.rho"), ("+train.max_step=5", "train.max_steps"),
                                           ("++train.max_step=5", "train.max_steps")])
def test_an_unknown_field_is_refused_in_every_spelling(byte_data, tmp_path, typo, closest):
    out = cli(*tiny_overrides(byte_data, tmp_path, "train.max_steps=2"), typo)
    key = typo.lstrip("+").split("=")[0]
    assert out.returncode == 2, out.stderr
    assert f"{key} is not a setting" in out.stderr and f"Did you mean {closest}?" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "use +" not in out.stderr
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before anything ran


def test_hydra_refusals_exit_2_in_one_paragraph():
    out = cli("+model=tiny", "optim.lr=abc")
    assert out.returncode == 2 and "optim.lr=abc" in out.stderr and "could not be converted to Float" in out.stderr
    assert "Traceback" not in out.stderr and "HYDRA_FULL_ERROR" not in out.stderr


# --- data checks: ids stored as they must be, metadata present -----------------------------------------
@pytest.mark.parametrize("dtype", ["int16", "float32", "int32"])
def test_token_files_of_a_signed_or_float_dtype_are_refused(byte_data, tmp_path, dtype):
    import numpy as np

    d = copy_data(byte_data, tmp_path / "data")
    meta = json.loads((d / "meta.json").read_text())
    for split in ("train", "val"):  # what such a file holds: -1 ids (int16), or floats
        ids = np.fromfile(d / f"{split}.bin", dtype=np.uint16).astype(dtype)
        ids[:10] = -1
        ids.tofile(d / f"{split}.bin")
    meta["dtype"] = dtype
    (d / "meta.json").write_text(json.dumps(meta))
    expect_error(tiny_overrides(d, tmp_path / "run"), rf"says the tokens are {dtype}, but token ids are stored as unsigned integers")


def test_byte_data_without_meta_json_is_not_taken_for_gpt2(byte_data, tmp_path):
    d = copy_data(byte_data, tmp_path / "data")
    (d / "meta.json").unlink()
    expect_error(tiny_overrides(d, tmp_path / "run"), r"no meta.json .* holds no id above \d+: that looks like byte-level")


def test_a_vocabulary_the_dtype_cannot_hold_is_refused(byte_data, tmp_path):
    d = copy_data(byte_data, tmp_path / "data")
    meta = json.loads((d / "meta.json").read_text())
    meta["vocab_size"] = 70_000  # uint16 holds 65,536 ids
    (d / "meta.json").write_text(json.dumps(meta))
    expect_error(tiny_overrides(d, tmp_path / "run"), "promises a vocabulary of 70000, which uint16 tokens cannot hold")


# --- the rest of the audit's list: each a one-paragraph refusal before heavy work ---------------------
@pytest.mark.parametrize("extra, optim, message", [
    (["train.seed=-1"], "sophia_g", r"train.seed must be an integer in \[0, 2\*\*63\), got -1"),
    (["train.seed=1180591620717411303424"], "sophia_g", r"train.seed must be an integer in \[0, 2\*\*63\)"),
    (["optim.precondition_frequency=0"], "soap", "optim.precondition_frequency must be >= 1"),
    (["optim.max_precond_dim=-1"], "soap", "optim.max_precond_dim must be >= 1"),
    (["optim.hessian_power=-1"], "adahessian", r"optim.hessian_power must be a number in \[0, 1\], got -1"),
    (["+optim.kwargs.momentum=-1"], "sgd", r"do not fit torch.optim.SGD: Invalid momentum value: -1"),
    (["++optim.kwargs.rho=2"], "adadelta", r"do not fit torch.optim.Adadelta: Invalid rho value: 2"),
    (["optim.momentum=nan"], "muon", r"optim.momentum must be a number in \[0, 1\), got nan"),
    (["optim.momentum=1.5"], "muon", r"optim.momentum must be a number in \[0, 1\), got 1.5"),
    (["optim.ns_steps=0"], "muon", "optim.ns_steps .* must be >= 1"),
    (["optim.rho=inf"], "sophia_g", "optim.rho must be positive and finite, got inf"),
    (["train.out_dir=''"], "sophia_g", "train.out_dir is empty"),
    (["train.eval_iters=1000000000"], "sophia_g", "train.eval_iters=1000000000 batches per evaluation"),
    (["model.n_layer=2000", "model.n_embd=8192", "model.n_head=8"], "adamw",
     r"fp32 weights and gradients alone need [\d,.]+ GiB, but cpu has [\d,.]+ GiB free"),
])
def test_the_audits_remaining_bad_inputs_are_one_paragraph(byte_data, tmp_path, extra, optim, message):
    out = cli(*tiny_overrides(byte_data, tmp_path / "run", optim=optim), *extra)  # the extra come last and win
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    import re

    assert re.search(message, out.stderr), out.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_new_torch_optim_keyword_needs_a_plus_and_says_so():
    out = cli("+model=tiny", "optim=sgd", "optim.kwargs.momentum=0.5")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "add one with +optim.kwargs.momentum=0.5" in out.stderr, out.stderr


def test_fused_true_off_cuda_is_one_paragraph(byte_data, tmp_path):
    env = {k: v for k, v in python_env().items() if k != "TRITON_INTERPRET"}  # the test suite's CPU interpreter off
    out = subprocess.run([PYTHON, "-m", "sophia_train", *tiny_overrides(byte_data, tmp_path), "optim.fused=true"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "optim=sophia_g cannot be built on cpu: fused=True needs CUDA parameters" in out.stderr
    assert "set optim.fused=false" in out.stderr


@pytest.mark.parametrize("case", ["empty_txt", "broken_jsonl", "out_is_a_file"])
def test_prepare_files_bad_inputs(tmp_path, case):
    good = tmp_path / "good.txt"
    good.write_text("\n\n".join(f"Paragraph {i} of some text." for i in range(40)))
    out_dir = tmp_path / "out"
    if case == "empty_txt":
        f, message = tmp_path / "empty.txt", "is empty: there is no text to prepare"
        f.write_text("")
    elif case == "broken_jsonl":
        f, message = tmp_path / "docs.jsonl", "docs.jsonl, line 2, is not valid JSON"
        f.write_text('{"text": "fine"}\n{"text": broken\n')
    else:
        f, message = good, "cannot be the dataset folder"
        out_dir.write_text("I am a file")
    out = prepare("files", "x", str(f), "--out", str(out_dir), "--tokenizer", "byte")
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not (out_dir / "meta.json").exists()


def test_a_benchmark_worker_refused_by_a_lock_is_one_paragraph(byte_data, tmp_path):
    from sophia_train.checkpoint import RunFolderLock
    from sophia_train.studies.benchmark.profiles import PROFILES, run_name

    out = tmp_path / "bench"
    profile = PROFILES["quick"]
    size, optim = profile.sizes[0], "adamw"
    point = {k: grid[len(grid) // 2] for k, grid in profile.spaces[optim].items()}
    folder = out / "runs" / run_name(size, optim, point, size.steps[1], profile.seeds[0])
    folder.mkdir(parents=True)
    lock = RunFolderLock(folder).acquire()  # another benchmark (or a person) is training in that folder
    try:
        done = subprocess.run([PYTHON, "-m", "sophia_train.studies.benchmark", "--profile", "quick", "--out", str(out), "--data-dir",
                               str(byte_data), "--optims", "adamw", "--threads", "1"], cwd=REPO, env=python_env(),
                              capture_output=True, text=True, timeout=600)
    finally:
        lock.release()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "is in use by another run" in done.stderr


def test_a_report_before_any_optimizer_finished_is_one_paragraph(tmp_path, capsys):
    from sophia_train.studies.benchmark.cli import main

    assert main(["--profile", "quick", "--out", str(tmp_path / "none"), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert "holds no chosen.json yet" in err and "(nothing was run there)" in err and "Traceback" not in err


def test_a_torch_keyword_of_the_wrong_kind_and_an_unknown_resume_allow_are_refused_on_a_new_run(byte_data, tmp_path):
    expect_error(tiny_overrides(byte_data, tmp_path, "+optim.kwargs.amsgrad=maybe", optim="adam"),
                 "optim.kwargs.amsgrad must be true or false for torch.optim.Adam, got 'maybe'")
    expect_error(tiny_overrides(byte_data, tmp_path / "b", "train.resume_allow=[optim.rhoo]"),
                 "train.resume_allow names optim.rhoo, which are not config keys")
