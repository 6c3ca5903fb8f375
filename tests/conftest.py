"""Shared fixtures: a small byte-level dataset from a real corpus, and config composition."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Triton kernels run on CPU tensors through the interpreter; it must be chosen before triton loads.
# SOPHIA_TEST_DEVICE=cuda (tests/unit/optim/test_fused_sophia.py on a GPU) compiles them for real instead.
if os.environ.get("SOPHIA_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs 2 workers on 2 cores) each worker keeps to one torch thread:
    two workers of two threads each would oversubscribe the cores and run slower than one."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def corpus_file() -> str | None:
    """The real English corpus for tests: $SOPHIA_TEST_CORPUS, else ../shared's tinyshakespeare if present."""
    env = os.environ.get("SOPHIA_TEST_CORPUS")
    if env:
        return env
    shared = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    return str(shared) if shared.is_file() else None


@pytest.fixture(scope="session")
def byte_data(tmp_path_factory) -> Path:
    """A prepared byte-level dataset (real text; CPython's docs when no corpus file is at hand)."""
    from sophia_train.data.corpus import _python_docs_text

    src = corpus_file()
    text = Path(src).read_text() if src else _python_docs_text()
    docs = [d for d in text.split("\n\n") if d.strip()]
    out = tmp_path_factory.mktemp("data") / "bytes"
    try:
        from datasets import Dataset
    except ImportError:  # the GPU machine's image has no `datasets` (bench/device_check.sh runs tests there)
        return _byte_splits_without_datasets(docs, out, src or "pydoc")
    from sophia_train.data.prepare import prepare_hf_dataset

    prepare_hf_dataset(Dataset.from_dict({"text": docs}), out, "byte", val_fraction=0.1, num_proc=1, source=src or "pydoc")
    return out


def _byte_splits_without_datasets(docs: list[str], out: Path, source: str) -> Path:
    """The byte-level splits written directly (last tenth of the documents as val): what the trainer reads."""
    import numpy as np

    from sophia_train.data.dataset import write_meta

    out.mkdir(parents=True, exist_ok=True)
    cut = len(docs) - max(1, len(docs) // 10)
    counts = {}
    for split, part in (("train", docs[:cut]), ("val", docs[cut:])):
        ids = np.frombuffer("".join(part).encode(), dtype=np.uint8).astype(np.uint16)
        ids.tofile(out / f"{split}.bin")
        counts[split] = int(ids.size)
    write_meta(out, 256, "byte", counts, source, max_token_id=255)
    return out


def compose(overrides: list[str]):
    """Compose the real Hydra config with ``overrides`` and return the typed ``Config`` object."""
    from sophia_train.compose import compose_config

    return compose_config(overrides)


def tiny_overrides(data_dir: Path, out_dir: Path, *extra: str, model: str = "nano", optim: str = "sophia_g") -> list[str]:
    """Overrides for a fast CPU run of ``model`` on ``data_dir`` writing into ``out_dir``."""
    return [
        f"+model={model}",
        f"optim={optim}",
        f"data.dir={data_dir}",
        f"train.out_dir={out_dir}",
        "train.batch_size=4",
        "train.max_steps=20",
        "train.warmup_steps=2",
        "train.eval_interval=10",
        "train.eval_iters=2",
        "train.log_interval=1",
        "train.plot=false",
        "train.threads=1",
        *extra,
    ]


def python_env() -> dict[str, str]:
    """Environment for child processes: single-threaded torch, repo on the path."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable
