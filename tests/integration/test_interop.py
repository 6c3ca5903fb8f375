"""Interop with the tools users already have: Hugging Face export and import, lm-eval-harness, nanoGPT
data folders and habits, sampling and inspecting checkpoints. Everything offline, on CPU."""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose, tiny_overrides
from sophia_train.config import ConfigError
from sophia_train.trainer import Trainer

transformers = pytest.importorskip("transformers")


def train(data, out, *extra, optim="adamw", steps=20):
    cfg = compose(tiny_overrides(data, out, f"train.max_steps={steps}", *extra, optim=optim))
    return Trainer(cfg).fit()


def hf_gpt2(tmp_path, vocab=256, **kw):
    """A randomly initialised GPT2LMHeadModel (biases and all) saved to a folder."""
    torch.manual_seed(0)
    conf = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, n_positions=32, activation_function="gelu_new",
                bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**conf, **kw})).eval()
    with torch.no_grad():  # non-zero biases, so that a dropped bias shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    model.save_pretrained(tmp_path / "hf_src")
    return model, tmp_path / "hf_src"


@pytest.mark.parametrize("scaled", [False, True])
def test_exported_model_computes_our_logits(byte_data, tmp_path, scaled):
    from sophia_train.checkpoint.load_run import load_run
    from sophia_train.interop.hf import export_hf

    train(byte_data, tmp_path / "run", f"model.attn_scale_by_layer={str(scaled).lower()}")
    out = export_hf(tmp_path / "run", tmp_path / "hf")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert "raw UTF-8 bytes" in (out / "README.md").read_text()
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert hf.config.scale_attn_by_inverse_layer_idx is scaled
    ours = load_run(tmp_path / "run").model
    x = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(x, full_logits=True)[0], hf(x).logits
    assert (a - b).abs().max() <= 1e-5
    assert a.std() > 0.1  # a real, trained function, not a constant
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "Thou art «more» lovely\n\n and  more temperate"
    assert tok(text).input_ids == list(text.encode("utf-8"))
    assert tok.decode(tok(text).input_ids) == text


def test_gpt2_tokenizer_export_matches_tiktoken():
    pytest.importorskip("tiktoken")
    from sophia_train.data.tokenizer import get_tokenizer
    from sophia_train.interop.hf import hf_tokenizer

    try:
        ours = get_tokenizer("gpt2")
    except ConfigError:
        pytest.skip("GPT-2 BPE files not available offline (TIKTOKEN_CACHE_DIR)")
    tok = hf_tokenizer({"name": "gpt2"})
    for text in ["Hello world, it's 2026!", "  indented\n\ncode:  x = f(y)  # ok", "naïve café 東京 🙂"]:
        assert tok(text).input_ids == ours.encode_ordinary(text)
    assert tok.eos_token_id == ours.eot_token == 50256


def test_init_from_hf_folder_loads_hf_logits(byte_data, tmp_path):
    hf, folder = hf_gpt2(tmp_path, scale_attn_by_inverse_layer_idx=True)
    cfg = compose(tiny_overrides(byte_data, tmp_path / "run", f"init_from={folder}", "train.max_steps=2")[1:])  # no +model
    assert (cfg.model.n_layer, cfg.model.bias, cfg.model.activation, cfg.model.attn_scale_by_layer) == (2, True, "gelu_tanh", True)
    tr = Trainer(cfg)
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (tr.model(x, full_logits=True)[0] - hf(x).logits).abs().max() <= 1e-5
    tr.fit()  # and it trains from there
    # +model with another shape is refused; with the same shape, bias/activation/vocab come from the source
    with pytest.raises(ConfigError, match="does not have the shape of init_from"):
        compose(tiny_overrides(byte_data, tmp_path / "r2", f"init_from={folder}", model="tiny"))
    cfg = compose(tiny_overrides(byte_data, tmp_path / "r3", f"init_from={folder}"))  # nano: 2 layers, 2 heads, 32 wide
    assert cfg.model.name == "nano" and cfg.model.bias and cfg.model.activation == "gelu_tanh"


def test_init_from_errors_are_one_paragraph(byte_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    with pytest.raises(ConfigError, match="init_from=gpt2-xl: no such model could be found.*Hugging Face cache"):
        compose(tiny_overrides(byte_data, tmp_path, "init_from=gpt2-xl")[1:])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds neither a Hugging Face model"):
        compose(tiny_overrides(byte_data, tmp_path, f"init_from={tmp_path / 'empty'}"))
    _, folder = hf_gpt2(tmp_path, vocab=50257)  # GPT-2 BPE weights on byte-level data
    cfg = compose(tiny_overrides(byte_data, tmp_path / "run", f"init_from={folder}")[1:])
    with pytest.raises(ConfigError, match="trained on gpt2 tokens but data .* is tokenized with 'byte'"):
        Trainer(cfg)


def test_init_from_a_run_starts_from_its_weights(byte_data, tmp_path, monkeypatch):
    """The weights are copied and the source checkpoint is read whole once: the shape and tokenizer
    checks before it (composing the config, building the trainer) map the file without reading tensors."""
    from sophia_train.checkpoint import load_checkpoint, load_checkpoint_meta
    from sophia_train.checkpoint.load_run import load_run

    train(byte_data, tmp_path / "a")
    full_state = load_checkpoint(tmp_path / "a")
    meta = load_checkpoint_meta(tmp_path / "a")
    assert sorted(meta) == sorted(set(full_state) - {"model", "optimizer"}) and meta["step"] == full_state["step"]
    assert meta["model_config"] == full_state["model_config"] and meta["tokenizer"] == full_state["tokenizer"]
    reads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        reads.append((Path(f).name if isinstance(f, (str, Path)) else "?", bool(kwargs.get("mmap"))))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    cfg = compose(tiny_overrides(byte_data, tmp_path / "b", f"init_from={tmp_path / 'a'}", "optim.lr=1e-4"))
    tr = Trainer(cfg)
    monkeypatch.undo()
    assert reads.count(("ckpt.pt", False)) == 1 and reads.count(("ckpt.pt", True)) >= 1, reads
    src = load_run(tmp_path / "a").model.state_dict()
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, src[k]), k
    assert all(len(s) == 0 for s in tr.optimizer.state.values())  # a fresh optimizer


def test_eval_only_and_keep_best(byte_data, tmp_path):
    from sophia_train.checkpoint import load_checkpoint

    out = tmp_path / "run"
    summary = train(byte_data, out, "train.keep_best=true", "train.eval_interval=5", steps=20)
    best = load_checkpoint(out / "best.pt")
    assert math.isclose(best["best_val"], summary["best_val_loss"]) and best["step"] in (5, 10, 15, 20)
    evals = {r["step"]: r["val_loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"}
    assert math.isclose(evals[best["step"]], min(v for s, v in evals.items() if s > 0), rel_tol=1e-9)
    before = sorted(p.name for p in out.iterdir()), (out / "metrics.jsonl").read_text()
    res = Trainer(compose(tiny_overrides(byte_data, out, "train.eval_only=true", "train.max_steps=20"))).fit()
    assert res["eval_only"] and res["step"] == 20 and math.isclose(res["val_loss"], evals[20], rel_tol=1e-6)
    assert (sorted(p.name for p in out.iterdir()), (out / "metrics.jsonl").read_text()) == before  # nothing written


def nanogpt_folder(src, dst, char: bool):
    """A nanoGPT-style data folder (uint16 bins, meta.pkl for characters or nothing for GPT-2 BPE)."""
    dst.mkdir()
    if not char:  # ids as GPT-2 BPE has them, most above the 256 bytes (byte data without metadata is refused)
        for split in ("train", "val"):
            (np.fromfile(src / f"{split}.bin", dtype=np.uint16) * 190).astype(np.uint16).tofile(dst / f"{split}.bin")
        return dst
    chars = sorted({chr(b) for split in ("train", "val") for b in np.fromfile(src / f"{split}.bin", dtype=np.uint16)})
    stoi = {c: i for i, c in enumerate(chars)}
    for split in ("train", "val"):
        ids = np.fromfile(src / f"{split}.bin", dtype=np.uint16)
        np.array([stoi[chr(b)] for b in ids], dtype=np.uint16).tofile(dst / f"{split}.bin")
    with open(dst / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return dst


def test_nanogpt_data_folders_train_and_sample_without_the_data(byte_data, tmp_path):
    from sophia_train.data import open_dataset
    from sophia_train.interop.sample import generate_samples

    char = nanogpt_folder(byte_data, tmp_path / "shakespeare_char", char=True)
    ds = open_dataset(char)
    assert ds.tokenizer == "char" and ds.vocab_size == len(ds.tokenizer_spec["chars"]) < 128
    train(char, tmp_path / "run")
    shutil.rmtree(char)  # sampling needs only the checkpoint
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("KING")
    samples = generate_samples(tmp_path / "run", f"FILE:{prompt}", max_new_tokens=30, num_samples=3, seed=1)
    assert len(samples) == 3 and all(s.startswith("KING") and len(s) == 34 for s in samples) and len(set(samples)) > 1
    bpe = open_dataset(nanogpt_folder(byte_data, tmp_path / "owt", char=False))
    assert (bpe.tokenizer, bpe.vocab_size) == ("gpt2", 50257)
    bad = tmp_path / "evil"
    bad.mkdir()
    for split in ("train", "val"):
        shutil.copy(byte_data / f"{split}.bin", bad / f"{split}.bin")
    (bad / "meta.pkl").write_bytes(pickle.dumps(ConfigError("code objects are refused")))
    with pytest.raises(ConfigError, match="not a nanoGPT meta.pkl"):
        open_dataset(bad)


def test_sample_cli_options(byte_data, tmp_path, capsys):
    from sophia_train.interop.sample import main

    train(byte_data, tmp_path / "run")
    main([str(tmp_path / "run"), "--prompt", "The", "-n", "10", "--num-samples", "2", "--temperature", "1.2", "--top-k", "5", "--device", "auto"])
    out = capsys.readouterr().out
    assert out.count("sample 1/2") == 1 and out.count("sample 2/2") == 1
    with pytest.raises(SystemExit, match="prompt file .* not found"):
        main([str(tmp_path / "run"), "--prompt", "FILE:/nonexistent.txt"])


def test_inspect_prints_step_config_and_val_loss(byte_data, tmp_path, capsys):
    from sophia_train.checkpoint.inspect_ckpt import main

    summary = train(byte_data, tmp_path / "run")
    main([str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "step       20 of 20" in out and f"val loss   {summary['final_val_loss']:.4f}" in out and "adamw" in out
    import re

    from sophia_train.checkpoint import load_checkpoint
    from sophia_train.model import GPT, GPTConfig

    shape = load_checkpoint(tmp_path / "run" / "ckpt.pt")["model_config"]
    banner = GPT(GPTConfig(**shape)).num_params() / 1e6  # the count the training banner prints
    assert f"{banner:.2f}M parameters (non-embedding rule of nanoGPT)" in out
    assert re.search(r"trained    \d+s of wall-clock", out), out  # a short run: seconds, not "0.00 h"
    main([str(tmp_path / "run"), "--json"])
    d = json.loads(capsys.readouterr().out)
    assert d["config"]["optim"]["name"] == "adamw" and d["tokenizer"] == "byte"


LOCAL_TASK = [
    {"query": "The king said to his", "choices": [" son", " zqxv"], "gold": 0},
    {"query": "And the people", "choices": [" qqqq", " were"], "gold": 1},
    {"query": "I will go to the", "choices": [" xkcd", " house", " and"], "gold": 1},
    {"query": "Thou art", "choices": [" a", " zz"], "gold": 0},
    {"query": "What is", "choices": [" ~~~", " this"], "gold": 1},
]


@pytest.mark.slow
def test_lm_eval_on_a_local_task_matches_hand_computed_accuracy(byte_data, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    from sophia_train.checkpoint.load_run import load_run
    from sophia_train.interop.evaluate import compare, evaluate_run

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = tmp_path / "cloze.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in LOCAL_TASK))
    runs = []
    for optim in ("adamw", "lion"):
        train(byte_data, tmp_path / optim, optim=optim, steps=30)
        runs.append(evaluate_run(tmp_path / optim, [], 0, local_tasks=[str(task)], device="cpu"))
    res = json.loads(runs[0].read_text())["results"]["local_cloze"]

    model = load_run(tmp_path / "adamw").model  # by hand: log p(choice | query), argmax vs gold
    hits, hits_norm = [], []
    for row in LOCAL_TASK:
        scores = []
        for choice in row["choices"]:
            ctx, cont = list(row["query"].encode()), list(choice.encode())
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids[:, :-1], full_logits=True)[0][0].double(), -1)
            scores.append(sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
        hits.append(int(np.argmax(scores)) == row["gold"])
        hits_norm.append(int(np.argmax([s / len(c.encode()) for s, c in zip(scores, row["choices"])])) == row["gold"])
    assert math.isclose(res["acc"], np.mean(hits)) and math.isclose(res["acc_norm"], np.mean(hits_norm))
    assert (tmp_path / "adamw" / "hf" / "model.safetensors").is_file() and runs[0].with_suffix(".md").is_file()
    table, png = compare([tmp_path / "adamw", tmp_path / "lion"], tmp_path / "cmp")
    assert png.stat().st_size > 1000 and "lion" in table.read_text() and "local_cloze" in table.read_text()
    # a Hub task without the Hub (HF_*_OFFLINE above: what a machine without network sees, without waiting on retries)
    with pytest.raises(ConfigError, match=r"Hugging Face Hub is unreachable .* `--local-task example`"):
        evaluate_run(tmp_path / "adamw", ["copa"], 0, limit=2, device="cpu")


def test_fig5_preset_names_tasks_the_harness_knows():
    """The paper's App. C.3 tasks (BoolQ, CB, COPA, RTE) under the names lm-eval registers, 2-shot, 5 draws."""
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from sophia_train.interop.evaluate import PRESETS

    preset = PRESETS["sophia_fig5"]
    known = TaskManager().all_tasks
    assert [t for t in preset["tasks"] if t not in known] == []
    assert (preset["num_fewshot"], preset["fewshot_seeds"], len(preset["tasks"])) == (2, 5, 4)


def test_the_shipped_example_task_is_a_valid_local_task(tmp_path):
    from sophia_train.interop.evaluate import EXAMPLE_TASK, local_task

    assert local_task("example", tmp_path) == "local_example_task"
    rows = [json.loads(line) for line in EXAMPLE_TASK.read_text().splitlines()]
    assert len(rows) == 16 and {r["gold"] for r in rows} == {0, 1, 2}  # the answer is not always the first choice


def test_hub_errors_are_recognised_through_their_causes():
    from sophia_train.interop.evaluate import _hub_unreachable

    class LocalEntryNotFoundError(Exception):
        pass

    try:
        try:
            raise LocalEntryNotFoundError("no cache")
        except LocalEntryNotFoundError as inner:
            raise RuntimeError("task failed") from inner
    except RuntimeError as outer:
        assert _hub_unreachable(outer)
    assert _hub_unreachable(ConnectionError("Couldn't reach 'aps/super_glue' on the Hub"))
    assert not _hub_unreachable(ValueError("bad shape"))
