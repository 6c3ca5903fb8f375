"""Turn text into a prepared token dataset: tokenize with ``datasets.map`` and write uint16 memmaps.

Sources: OpenWebText from the Hugging Face hub (parquet, so current ``datasets`` releases load it),
any local text / jsonl / parquet files, and the embedded default corpus (``corpus.py``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .corpus import default_corpus_text
from .data import SPLITS, write_meta, write_split
from .tokenizer import get_tokenizer

OWT_HUB_ID = "Skylion007/openwebtext"
OWT_REVISION = "refs/convert/parquet"  # the hub's parquet export: no loading script needed


@functools.lru_cache(maxsize=None)
def _cached_tokenizer(name: str):
    return get_tokenizer(name)


def _tokenize_batch(batch: dict, tokenizer_name: str, text_field: str) -> dict:
    tok = _cached_tokenizer(tokenizer_name)
    ids = [tok.encode_document(t) for t in batch[text_field]]
    return {"ids": ids, "len": [len(x) for x in ids]}


def _write_tokenized(split_ds, path: Path, dtype: np.dtype, desc: str) -> int:
    """Concatenate the ``ids`` column of a tokenized split into one flat file, with a progress bar."""
    from tqdm.auto import tqdm

    total = int(np.sum(split_ds["len"], dtype=np.int64))
    tmp = path.with_suffix(path.suffix + ".tmp")
    arr = np.memmap(tmp, dtype=dtype, mode="w+", shape=(max(total, 1),))
    n_shards = max(1, min(1024, len(split_ds) // 1000))
    pos = 0
    for i in tqdm(range(n_shards), desc=desc, disable=n_shards < 4):
        shard = split_ds.shard(num_shards=n_shards, index=i, contiguous=True).with_format("numpy")
        ids = shard["ids"]
        chunk = np.concatenate(list(ids)).astype(dtype) if len(ids) else np.zeros(0, dtype=dtype)
        arr[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    arr.flush()
    del arr
    if total == 0:
        tmp.unlink()
        write_split(path, np.zeros(0, dtype=dtype))
    else:
        os.replace(tmp, path)
    return total


def prepare_hf_dataset(
    dataset,
    out_dir: str | os.PathLike,
    tokenizer: str,
    *,
    val_fraction: float,
    text_field: str = "text",
    num_proc: int | None = None,
    seed: int = 2357,
    source: str = "",
) -> dict[str, int]:
    """Split a ``datasets.Dataset`` of documents into train/val, tokenize, and write the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = get_tokenizer(tokenizer)
    if len(dataset) < 2:
        raise ValueError(f"need at least 2 documents to make a train/val split, got {len(dataset)}")
    split = dataset.train_test_split(test_size=val_fraction, seed=seed, shuffle=True)
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 65536 else np.uint32)
    counts = {}
    for name, part in (("train", split["train"]), ("val", split["test"])):
        tokenized = part.map(
            _tokenize_batch,
            batched=True,
            fn_kwargs={"tokenizer_name": tokenizer, "text_field": text_field},
            remove_columns=part.column_names,
            num_proc=num_proc if num_proc and num_proc > 1 and len(part) >= 2 * num_proc else None,
            desc=f"tokenizing {name} ({tokenizer})",
        )
        counts[name] = _write_tokenized(tokenized, out / f"{name}.bin", dtype, f"writing {name}.bin")
    write_meta(out, tok.vocab_size, tok.name, {s: counts[s] for s in SPLITS}, source)
    return counts


def load_local_files(files: Sequence[str | os.PathLike], text_field: str = "text"):
    """Load local .txt (one document per paragraph), .jsonl/.json or .parquet files as one dataset."""
    from datasets import load_dataset

    paths = [str(Path(f)) for f in files]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"input files not found: {', '.join(missing)}")
    suffixes = {Path(p).suffix.lower() for p in paths}
    if suffixes <= {".txt", ".text", ".md"}:
        return load_dataset("text", data_files=paths, split="train", sample_by="paragraph")
    if suffixes <= {".jsonl", ".json"}:
        return load_dataset("json", data_files=paths, split="train")
    if suffixes <= {".parquet"}:
        return load_dataset("parquet", data_files=paths, split="train")
    raise ValueError(f"mixed or unsupported file types {sorted(suffixes)}; use .txt, .jsonl/.json or .parquet files")


def load_openwebtext(hub_id: str = OWT_HUB_ID, revision: str | None = OWT_REVISION, num_proc: int | None = None):
    """OpenWebText's 8M documents from the hub (downloads ~55 GB of parquet on first use)."""
    from datasets import load_dataset

    return load_dataset(hub_id, revision=revision, split="train", num_proc=num_proc)


def _data_root() -> Path:
    return Path(os.environ.get("SOPHIA_DATA_DIR", "data"))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``prepare_data.py {corpus,openwebtext,files} ...``."""
    import argparse

    from datasets import Dataset

    ap = argparse.ArgumentParser(description="Tokenize a corpus into train.bin / val.bin / meta.json.")
    sub = ap.add_subparsers(dest="source", required=True)
    c = sub.add_parser("corpus", help="the embedded default corpus (no network needed)")
    c.add_argument("--corpus-file", help="use this text file instead (also: SOPHIA_CORPUS)")
    c.add_argument("--val-fraction", type=float, default=0.1)
    o = sub.add_parser("openwebtext", help="OpenWebText from the Hugging Face hub (GPT-2 BPE)")
    o.add_argument("--hub-id", default=OWT_HUB_ID)
    o.add_argument("--revision", default=OWT_REVISION)
    o.add_argument("--val-fraction", type=float, default=0.0005)  # nanoGPT's split
    f = sub.add_parser("files", help="local .txt / .jsonl / .parquet files")
    f.add_argument("name", help="dataset name: written to <data root>/<name> unless --out is given")
    f.add_argument("files", nargs="+")
    f.add_argument("--text-field", default="text")
    f.add_argument("--val-fraction", type=float, default=0.05)
    for p in (c, o, f):
        p.add_argument("--tokenizer", choices=["byte", "gpt2"], default="gpt2" if p is not c else "byte")
        p.add_argument("--out", help="output folder (default: $SOPHIA_DATA_DIR or data/, then the name)")
        p.add_argument("--num-proc", type=int, default=min(8, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    text_field = "text"
    if args.source == "corpus":
        text, source = default_corpus_text(args.corpus_file)
        docs = [d.strip() for d in text.split("\n\n") if d.strip()]
        dataset = Dataset.from_dict({"text": docs})
        name = "corpus" if args.tokenizer == "byte" else f"corpus_{args.tokenizer}"
    elif args.source == "openwebtext":
        dataset, source, name = load_openwebtext(args.hub_id, args.revision, args.num_proc), args.hub_id, "openwebtext"
        if args.tokenizer != "gpt2":
            name = f"openwebtext_{args.tokenizer}"
    else:
        dataset, source, name = load_local_files(args.files, args.text_field), ", ".join(args.files), args.name
        text_field = args.text_field
    out = Path(args.out) if args.out else _data_root() / name
    print(f"preparing {name} from {source}: {len(dataset):,} documents -> {out}")
    counts = prepare_hf_dataset(
        dataset, out, args.tokenizer, val_fraction=args.val_fraction, text_field=text_field,
        num_proc=args.num_proc, source=source,
    )
    print(f"wrote {out}: train {counts['train']:,} tokens, val {counts['val']:,} tokens ({args.tokenizer})")
    return 0
