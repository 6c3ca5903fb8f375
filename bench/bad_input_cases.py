"""The bad-input cases of ``reliability_attack.py``: every one a user could type or leave on disk (impossible
settings, misspelt keys, damaged data folders and checkpoints, bad prepare_data.py inputs), as command lines."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sophia_train import checkpoint as ckpt


class BadInputCases:
    """The bad-input cases being listed: (label, argv after python, kind); kind 'train' runs ``-m sophia_train``,
    'prepare' the data script. ``data`` is a good prepared folder, ``root`` where damaged copies go."""

    def __init__(self, data: Path, root: Path, base_args: Callable[..., list[str]], cli: Callable[[list[str]], Any]):
        self.data, self.root, self.base_args, self.cli, self.items = data, root, base_args, cli, []

    def add(self, label: str, argv: list[str], kind: str = "train") -> None:
        self.items.append((label, argv, kind))

    def train(self, label: str, *extra: str, optim: str = "sophia_g", data_dir: Path | None = None) -> None:
        """A 3-step training run on ``data_dir`` (default the good folder) with ``extra`` overrides."""
        out = self.root / "bad" / f"c{len(self.items)}"
        self.add(label, self.base_args(data_dir or self.data, out, "train.max_steps=3", *extra, optim=optim))


def bad_input_cases(data: Path, root: Path, base_args: Callable[..., list[str]], cli: Callable[[list[str]], Any]) -> list[tuple[str, list[str], str]]:
    """Every bad-input case, in a fixed order: config values, damaged data, damaged checkpoints, prepare_data.py.
    ``base_args(data, out, *extra, optim=)`` gives a tiny run's overrides, ``cli(argv)`` runs one (to make a checkpoint)."""
    cases = BadInputCases(data, root, base_args, cli)
    for add in (bad_config_cases, bad_data_cases, bad_checkpoint_cases, bad_prepare_cases):
        add(cases)
    return cases.items


def bad_config_cases(cases: BadInputCases) -> None:
    """Impossible or misspelt settings of every config group, unknown models, optimizers and data."""
    for value in ("-1", "0", "nan", "inf"):
        cases.train(f"optim.lr={value}", f"optim.lr={value}")
    for key in ("rho", "eps"):
        for value in ("-1", "0", "nan", "inf"):
            cases.train(f"optim.{key}={value}", f"optim.{key}={value}")
    for value in ("[0.9]", "[1.0,0.99]", "[-0.1,0.99]", "[0.9,nan]"):
        cases.train(f"optim.betas={value}", f"optim.betas={value}")
    for key, value in (("weight_decay", "-1"), ("weight_decay", "nan"), ("hess_interval", "0"), ("hess_fraction", "0"),
                       ("hess_fraction", "1.5"), ("estimator", "fisherr"), ("denominator", "sqrt")):
        cases.train(f"optim.{key}={value}", f"optim.{key}={value}")
    for optim, key, value in (("soap", "precondition_frequency", "0"), ("soap", "max_precond_dim", "-1"),
                              ("soap", "shampoo_beta", "1.5"), ("adahessian", "hessian_power", "-1"),
                              ("adahessian", "hessian_power", "2"), ("muon", "momentum", "nan"), ("muon", "momentum", "1.5"),
                              ("muon", "ns_steps", "0"), ("muon", "ns_steps", "-3"), ("s3", "p", "0.5"), ("s3", "beta", "1"),
                              ("normalize", "beta", "-0.5"), ("kron", "precond_lr", "0"), ("kron", "max_size_triangular", "0"),
                              ("lion", "betas", "[1.5,0.9]")):
        cases.train(f"{optim} {key}={value}", f"optim.{key}={value}", optim=optim)
    for optim, kw in (("sgd", "+optim.kwargs.momentum=-1"), ("adadelta", "++optim.kwargs.rho=2"),
                      ("rmsprop", "++optim.kwargs.alpha=-1"), ("adam", "+optim.kwargs.amsgrad=maybe"),
                      ("sgd", "+optim.kwargs.nonsense=1"), ("sgd", "optim.torch_class=NoSuchOptimizer")):
        cases.train(f"{optim} {kw}", kw, optim=optim)
    cases.train("optim.fused=true on CPU", "optim.fused=true")
    for spelling in ("optim.rhoo=1", "+optim.rhoo=1", "++optim.rhoo=1", "+train.max_step=5", "++train.max_step=5",
                     "+model.n_layerz=2", "+foo=1", "train.nonsense=1"):
        cases.train(spelling, spelling)
    for key, value in (("seed", "-1"), ("seed", "1180591620717411303424"), ("batch_size", "0"), ("batch_size", "-4"),
                       ("grad_accum", "0"), ("global_batch", "7"), ("seq_len", "0"), ("seq_len", "100000"),
                       ("max_steps", "0"), ("warmup_steps", "-1"), ("warmup_steps", "100"), ("min_lr_ratio", "2"),
                       ("grad_clip", "-1"), ("eval_iters", "0"), ("eval_iters", "1000000000"), ("eval_interval", "0"),
                       ("log_interval", "0"), ("ckpt_interval", "-1"), ("threads", "-2"), ("stop_after_step", "99"),
                       ("dtype", "float16"), ("parallel", "zero3"), ("device", "tpu"), ("device", "cuda:7"),
                       ("out_dir", "''"), ("max_skips_in_row", "0"), ("resume_allow", "[optim.rhoo]")):
        cases.train(f"train.{key}={value}", f"train.{key}={value}")
    for key, value in (("n_layer", "0"), ("n_head", "3"), ("n_embd", "-8"), ("block_size", "0"), ("dropout", "1.5"),
                       ("activation", "relu"), ("vocab_size", "10")):
        cases.train(f"model.{key}={value}", f"model.{key}={value}")
    cases.train("a model too large for memory", "model.n_layer=2000", "model.n_embd=8192", "model.n_head=8", optim="adamw")
    cases.train("fsdp with soap", "train.parallel=fsdp", optim="soap")
    cases.train("train.resume=true with no checkpoint", "train.resume=true")
    cases.train("+model=gpt5 (unknown model)", "+model=gpt5")
    cases.add("model=tiny without +", ["model=tiny"], "train")
    cases.add("optim=adamx (unknown optimizer)", ["+model=tiny", "optim=adamx"], "train")
    cases.add("data=nope", ["+model=tiny", "data=nope"], "train")
    cases.add("optim.lr=abc", ["+model=tiny", "optim.lr=abc"], "train")


def bad_data_cases(cases: BadInputCases) -> None:
    """Damaged copies of the prepared data folder, and one that is missing."""
    def damaged(label: str, change) -> None:
        d = cases.root / "bad" / f"data{len(cases.items)}"
        shutil.copytree(cases.data, d)
        change(d)
        cases.train(label, data_dir=d)

    def set_meta(**kv):
        def change(d: Path) -> None:
            meta = json.loads((d / "meta.json").read_text())
            meta.update(kv)
            (d / "meta.json").write_text(json.dumps(meta))
        return change

    damaged("meta.json not JSON", lambda d: (d / "meta.json").write_text("{not json"))
    damaged("meta.json dtype int16", set_meta(dtype="int16"))
    damaged("meta.json dtype float32", set_meta(dtype="float32"))
    damaged("meta.json dtype nonsense", set_meta(dtype="utf9"))
    damaged("meta.json vocab 50", set_meta(vocab_size=50))
    damaged("meta.json vocab 70000 in uint16", set_meta(vocab_size=70000))
    damaged("meta.json token count wrong", set_meta(num_tokens={"train": 5, "val": 5}))
    damaged("meta.json no vocab_size", lambda d: (d / "meta.json").write_text(json.dumps({"tokenizer": "byte"})))
    damaged("train.bin truncated", lambda d: os.truncate(d / "train.bin", 1001))
    damaged("val.bin missing", lambda d: (d / "val.bin").unlink())
    damaged("byte data without meta.json", lambda d: (d / "meta.json").unlink())
    damaged("a tiny dataset", lambda d: ((d / "val.bin").write_bytes(np.arange(5, dtype=np.uint16).tobytes()),
                                         set_meta(num_tokens={"train": json.loads((d / "meta.json").read_text())["num_tokens"]["train"],
                                                              "val": 5})(d)))
    cases.train("data.dir missing", data_dir=cases.root / "nowhere")


def bad_checkpoint_cases(cases: BadInputCases) -> None:
    """Damaged or mismatched checkpoints, each resumed; an out_dir under a file."""
    source = cases.root / "bad" / "ckpt_source"
    assert cases.cli(cases.base_args(cases.data, source, "train.max_steps=6", "train.stop_after_step=3")).returncode == 0

    def broken_ckpt(label: str, change, *extra: str) -> None:
        run = cases.root / "bad" / f"run{len(cases.items)}"
        shutil.copytree(source, run)
        change(run / "ckpt.pt")
        cases.add(label, cases.base_args(cases.data, run, "train.max_steps=6", "train.resume=true", *extra), "train")

    def edit_state(fn):
        def change(path: Path) -> None:
            state = torch.load(path, weights_only=True)
            fn(state)
            ckpt.save_checkpoint(state, path)
        return change

    def flip(path: Path) -> None:
        blob = bytearray(path.read_bytes())
        for j in range(64):
            blob[len(blob) // 2 + j] ^= 0xFF
        path.write_bytes(bytes(blob))

    broken_ckpt("ckpt.pt 0 bytes", lambda p: p.write_bytes(b""))
    broken_ckpt("ckpt.pt truncated", lambda p: p.write_bytes(p.read_bytes()[:1000]))
    broken_ckpt("ckpt.pt 64 flipped bytes", flip)
    broken_ckpt("ckpt.pt not a checkpoint", lambda p: p.write_bytes(b"hello" * 100))
    broken_ckpt("ckpt.pt without optimizer", edit_state(lambda s: s.pop("optimizer")))
    broken_ckpt("ckpt.pt step -1", edit_state(lambda s: s.update(step=-1)))
    broken_ckpt("ckpt.pt wrong weight shape", edit_state(lambda s: s["model"].update({next(iter(s["model"])): torch.zeros(3, 3)})))
    broken_ckpt("ckpt.pt all NaN", edit_state(lambda s: [v.fill_(float("nan")) for v in s["model"].values()]))
    broken_ckpt("ckpt.pt of another model", lambda p: None, "model.n_embd=64")
    broken_ckpt("ckpt.pt of another optimizer", lambda p: None, "optim=adamw")
    broken_ckpt("resume with a changed seed", lambda p: None, "train.seed=7")
    broken_ckpt("resume changing the denominator", lambda p: None, "optim.denominator=max", "train.resume_allow=[optim.denominator]")
    broken_ckpt("resume on another corpus", lambda p: None, f"data.dir={cases.root / 'bad' / 'data_other'}")
    other = cases.root / "bad" / "data_other"
    shutil.copytree(cases.data, other)
    ids = np.fromfile(other / "train.bin", dtype=np.uint16)
    ids[-50:] = ids[-50:][::-1]
    ids.tofile(other / "train.bin")
    (cases.root / "bad" / "afile").write_text("x")
    cases.train("out_dir under a file", f"train.out_dir={cases.root / 'bad' / 'afile' / 'run'}")


def bad_prepare_cases(cases: BadInputCases) -> None:
    """prepare_data.py on empty, broken, non-text and misnamed inputs."""
    src = cases.root / "bad" / "src"
    src.mkdir()
    (src / "empty.txt").write_text("")
    (src / "blank.txt").write_text("  \n\n ")
    (src / "one.txt").write_text("a single paragraph")
    (src / "broken.jsonl").write_text('{"text": "ok"}\n{"text": oops\n')
    (src / "list.jsonl").write_text('["not", "an", "object"]\n')
    (src / "nofield.jsonl").write_text('{"body": "text"}\n{"body": "more"}\n')
    (src / "book.pdf").write_bytes(b"%PDF-1.4")
    (src / "latin1.txt").write_bytes("caf\xe9\n\nbr\xfbl\xe9e".encode("latin-1"))
    (src / "good.txt").write_text("\n\n".join(f"paragraph {i}" for i in range(40)))
    out = cases.root / "bad" / "prep"
    for label, argv in (("files: empty .txt", ["files", "x", str(src / "empty.txt")]),
                        ("files: blank .txt", ["files", "x", str(src / "blank.txt")]),
                        ("files: one paragraph", ["files", "x", str(src / "one.txt")]),
                        ("files: broken .jsonl", ["files", "x", str(src / "broken.jsonl")]),
                        ("files: .jsonl of lists", ["files", "x", str(src / "list.jsonl")]),
                        ("files: .jsonl without the field", ["files", "x", str(src / "nofield.jsonl")]),
                        ("files: a .pdf", ["files", "x", str(src / "book.pdf")]),
                        ("files: not UTF-8", ["files", "x", str(src / "latin1.txt")]),
                        ("files: missing file", ["files", "x", str(src / "nope.txt")]),
                        ("files: --out is a file", ["files", "x", str(src / "good.txt"), "--out", str(src / "good.txt")]),
                        ("corpus: --val-fraction 1.5", ["corpus", "--val-fraction", "1.5"]),
                        ("corpus: missing --corpus-file", ["corpus", "--corpus-file", str(src / "nope.txt")])):
        if "--out" not in argv:
            argv = [*argv, "--out", str(out / str(len(cases.items)))]
        cases.add(label, ["scripts/prepare_data.py", *argv, "--tokenizer", "byte"], "prepare")
