"""Data preparation and batch sampling: formats, tokenizers, determinism and layout independence."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from sophia_train.data import BatchSampler, open_dataset
from sophia_train.data.prepare import load_local_files, prepare_hf_dataset
from sophia_train.data.prepare import main as prepare_main
from sophia_train.data.tokenizer import get_tokenizer


def test_byte_tokenizer_round_trip():
    tok = get_tokenizer("byte")
    text = "Sophia — clipped (ü)"
    assert tok.decode(tok.encode_ordinary(text)) == text
    assert tok.encode_document("ab") == [97, 98, 10, 10]


needs_gpt2 = pytest.mark.skipif(
    not os.environ.get("TIKTOKEN_CACHE_DIR"), reason="GPT-2 BPE files need TIKTOKEN_CACHE_DIR offline (set by make test when ../shared exists)"
)


@needs_gpt2
def test_gpt2_tokenizer_appends_eot():
    tok = get_tokenizer("gpt2")
    assert tok.vocab_size == 50257 and tok.eot_token == 50256
    ids = tok.encode_document("Hello world")
    assert ids == [15496, 995, 50256]


@needs_gpt2
def test_prepare_jsonl_with_gpt2_and_workers(tmp_path):
    docs = [{"text": f"Document number {i} talks about second-order optimizers."} for i in range(400)]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    counts = prepare_hf_dataset(load_local_files([src]), tmp_path / "out", "gpt2", val_fraction=0.1, num_proc=2)
    ds = open_dataset(tmp_path / "out")
    assert ds.vocab_size == 50257 and ds.tokenizer == "gpt2" and ds.dtype == np.uint16
    train = np.asarray(ds.tokens("train"))
    assert len(train) == counts["train"] and (train == 50256).sum() == 360
    assert counts["val"] > 0 and (np.asarray(ds.tokens("val")) == 50256).sum() == 40


def test_prepare_text_files_cli(tmp_path, monkeypatch):
    src = tmp_path / "a.txt"
    src.write_text("\n\n".join(f"Paragraph {i}: the clipped update is bounded." for i in range(300)))
    monkeypatch.setenv("SOPHIA_DATA_DIR", str(tmp_path / "root"))
    assert prepare_main(["files", "mine", str(src), "--tokenizer", "byte", "--num-proc", "1"]) == 0
    ds = open_dataset(tmp_path / "root" / "mine")
    text = bytes(np.asarray(ds.tokens("train"), dtype=np.uint8)).decode()
    assert "the clipped update is bounded." in text and ds.vocab_size == 256


def test_default_corpus_from_a_given_file(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("\n\n".join(f"Verse {i} of a real corpus." for i in range(200)))
    assert prepare_main(["corpus", "--corpus-file", str(src), "--out", str(tmp_path / "c"), "--num-proc", "1"]) == 0
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["tokenizer"] == "byte" and meta["source"] == str(src)


def test_python_docs_fallback_is_real_english():
    from sophia_train.data.corpus import _python_docs_text

    text = _python_docs_text()
    assert len(text) > 200_000 and text.count(" the ") > 1000


def test_batches_are_deterministic_and_shifted(byte_data):
    ds = open_dataset(byte_data)
    s = BatchSampler(ds, seq_len=16, batch_size=4, seed=3, device=torch.device("cpu"))
    x1, y1 = s.get("train", 5, 1)
    x2, y2 = s.get("train", 5, 1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    x3, _ = s.get("train", 6, 1)
    x4, _ = s.get("train", 5, 0)
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)
    raw = np.asarray(ds.tokens("train"))
    off = s.offsets("train", 5, 1)
    assert torch.equal(x1[0], torch.from_numpy(raw[off[0] : off[0] + 16].astype(np.int64)))
