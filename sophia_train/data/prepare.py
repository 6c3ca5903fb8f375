"""Turn text into a prepared token dataset: tokenize with ``datasets.map`` and write uint16 memmaps.

Sources: OpenWebText from the Hugging Face hub (parquet, so current ``datasets`` releases load it),
any local text / jsonl / parquet files, and the embedded default corpus (``corpus.py``).
"""

from __future__ import annotations

import argparse
import codecs
import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import Dataset, load_dataset
from tqdm.auto import tqdm

from sophia_train.atomic import file_in_the_way
from sophia_train.data import SPLITS, write_meta, write_split
from sophia_train.data.corpus import corpus_path, default_corpus_text
from sophia_train.data.tokenizer import get_tokenizer
from sophia_train.errors import ConfigError

TEXT_SUFFIXES = {".txt", ".text", ".md"}
JSON_SUFFIXES = {".jsonl", ".json"}
_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as surrogateescape decodes them

OWT_HUB_ID = "Skylion007/openwebtext"
OWT_REVISION = "refs/convert/parquet"  # the hub's parquet export: no loading script needed
OWT_DOCUMENTS = 8_013_769  # the whole corpus; nanoGPT's prepare then reports ~9.0B train tokens


@functools.lru_cache(maxsize=None)
def _cached_tokenizer(name: str):
    return get_tokenizer(name)


def _tokenize_batch(batch: dict, tokenizer_name: str, text_field: str) -> dict:
    tok = _cached_tokenizer(tokenizer_name)
    ids = [tok.encode_document(t) for t in batch[text_field]]
    return {"ids": ids, "len": [len(x) for x in ids]}


def invalid_utf8(path: str | os.PathLike, chunk_bytes: int = 1 << 24) -> tuple[int, int | None]:
    """``(number of bytes that are not UTF-8, offset of the first)`` of a file, read in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    bad, first, done = 0, None, 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            text = decoder.decode(raw, final=not raw)
            hits = _ESCAPED.findall(text)
            if hits:
                if first is None:
                    i = _ESCAPED.search(text).start()
                    first = done + len(text[:i].encode("utf-8", "surrogateescape"))
                bad += len(hits)
            done += len(text.encode("utf-8", "surrogateescape"))
            if not raw:
                return bad, first


def check_encoding(paths: Sequence[str | os.PathLike], errors: str) -> int:
    """Refuse text that is not UTF-8 (``errors="strict"``), or count what ``"replace"`` will replace."""
    total = 0
    for path in paths:
        bad, first = invalid_utf8(path)
        if bad and errors == "strict":
            raise ConfigError(
                f"{path} is not valid UTF-8: {bad:,} bytes are not, the first at byte offset {first:,}. Convert it "
                f"(e.g. `iconv -f latin1 -t utf-8 {path} > fixed.txt`), or pass --encoding-errors replace to "
                f"replace each such byte with U+FFFD (the count is then reported). Nothing was written."
            )
        if bad:
            print(f"{path}: replacing {bad:,} bytes that are not UTF-8 with U+FFFD (first at byte {first:,})", file=sys.stderr)
        total += bad
    return total


def _write_tokenized(split_ds, path: Path, dtype: np.dtype, desc: str) -> tuple[int, int]:
    """Concatenate the ``ids`` column of a tokenized split into one flat file, with a progress bar;
    returns (tokens, largest token id)."""
    total = int(np.sum(split_ds["len"], dtype=np.int64))
    tmp = path.with_suffix(path.suffix + ".tmp")
    arr = np.memmap(tmp, dtype=dtype, mode="w+", shape=(max(total, 1),))
    n_shards = max(1, min(1024, len(split_ds) // 1000))
    pos, max_id = 0, -1
    for i in tqdm(range(n_shards), desc=desc, disable=n_shards < 4):
        shard = split_ds.shard(num_shards=n_shards, index=i, contiguous=True).with_format("numpy")
        ids = shard["ids"]
        chunk = np.concatenate(list(ids)).astype(dtype) if len(ids) else np.zeros(0, dtype=dtype)
        arr[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
        if len(chunk):
            max_id = max(max_id, int(chunk.max()))
    arr.flush()
    del arr
    if total == 0:
        tmp.unlink()
        write_split(path, np.zeros(0, dtype=dtype))
    else:
        os.replace(tmp, path)
    return total, max_id


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
    meta_extra: dict | None = None,
) -> dict[str, int]:
    """Split a ``datasets.Dataset`` of documents into train/val, tokenize, and write the folder."""
    out = Path(out_dir)
    tok = get_tokenizer(tokenizer)
    if not 0 < val_fraction < 1:
        raise ConfigError(f"the validation fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    if len(dataset) < 2:
        raise ConfigError(
            f"{source or 'the input'} holds {len(dataset)} document(s) (paragraphs separated by blank lines, or "
            f"records); a train/val split needs at least 2, and training needs far more. Nothing was written."
        )
    try:
        split = dataset.train_test_split(test_size=val_fraction, seed=seed, shuffle=True)
    except ValueError as e:  # e.g. a fraction that leaves one side empty
        raise ConfigError(f"cannot split {len(dataset)} documents with --val-fraction {val_fraction}: {e}. Nothing was written.") from None
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 65536 else np.uint32)
    counts, max_id = {}, -1
    for name, part in (("train", split["train"]), ("val", split["test"])):
        tokenized = part.map(
            _tokenize_batch,
            batched=True,
            fn_kwargs={"tokenizer_name": tokenizer, "text_field": text_field},
            remove_columns=part.column_names,
            num_proc=num_proc if num_proc and num_proc > 1 and len(part) >= 2 * num_proc else None,
            desc=f"tokenizing {name} ({tokenizer})",
        )
        counts[name], split_max = _write_tokenized(tokenized, out / f"{name}.bin", dtype, f"writing {name}.bin")
        max_id = max(max_id, split_max)
    write_meta(out, tok.vocab_size, tok.name, {s: counts[s] for s in SPLITS}, source, max_token_id=max_id, **(meta_extra or {}))
    return counts


def check_jsonl(path: str | os.PathLike) -> None:
    """Refuse a .jsonl file with a line that is not one JSON object, naming the line (the datasets library
    only says that "an error occurred while generating the dataset")."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ConfigError(f"{path}, line {number}, is not valid JSON ({e}): a .jsonl file holds one JSON object "
                                  f"per line. Fix or drop that line. Nothing was written.") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{path}, line {number}, is a JSON {type(record).__name__}, not an object with a text "
                                  f"field. Nothing was written.")


def check_out_dir(out: Path) -> None:
    """Refuse an output folder that a file stands in the way of, before any work."""
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise ConfigError(f"--out {out} cannot be the dataset folder: {blocker} is a file. Choose another --out; nothing "
                          f"was written.")


def load_local_files(files: Sequence[str | os.PathLike], text_field: str = "text", encoding_errors: str = "strict"):
    """Load local .txt (one document per paragraph), .jsonl/.json or .parquet files as one dataset."""
    paths = [str(Path(f)) for f in files]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"input files not found: {', '.join(missing)}. Nothing was written.")
    empty = [p for p in paths if Path(p).stat().st_size == 0 or (Path(p).stat().st_size < (1 << 20) and Path(
        p).suffix.lower() != ".parquet" and not Path(p).read_bytes().strip())]  # nothing but whitespace
    if empty:
        raise ConfigError(f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty: there is no text to prepare. "
                          f"Nothing was written.")
    suffixes = {Path(p).suffix.lower() for p in paths}
    if suffixes <= TEXT_SUFFIXES | JSON_SUFFIXES:
        check_encoding(paths, encoding_errors)
    if suffixes <= TEXT_SUFFIXES:
        return load_dataset("text", data_files=paths, split="train", sample_by="paragraph", encoding_errors=encoding_errors)
    if suffixes <= JSON_SUFFIXES:
        for path in paths:
            if Path(path).suffix.lower() == ".jsonl":
                check_jsonl(path)
        ds = load_dataset("json", data_files=paths, split="train", encoding_errors=encoding_errors)
        if text_field not in ds.column_names:
            raise ConfigError(f"the records in {', '.join(paths)} have no field {text_field!r} (fields: {', '.join(ds.column_names)}); "
                              f"name the text field with --text-field.")
        return ds
    if suffixes <= {".parquet"}:
        return load_dataset("parquet", data_files=paths, split="train")
    raise ConfigError(
        f"unsupported or mixed file types {', '.join(sorted(suffixes)) or '(no extension)'}: give .txt/.text/.md "
        f"(documents separated by blank lines), .jsonl/.json (one record per document, text in --text-field) or "
        f".parquet files, one kind per call. Nothing was written."
    )


def load_openwebtext(hub_id: str = OWT_HUB_ID, revision: str | None = OWT_REVISION, num_proc: int | None = None):
    """OpenWebText's 8M documents from the hub (downloads ~55 GB of parquet on first use); a source that
    cannot be reached (offline, wrong id) is one paragraph, not a traceback."""
    try:
        return load_dataset(hub_id, revision=revision or None, split="train", num_proc=num_proc)
    except Exception as e:  # ConnectionError, offline-mode and not-found errors of datasets / huggingface_hub
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ConfigError(
            f"could not load OpenWebText from {hub_id!r} (revision {revision or 'default'}): {type(e).__name__}: {first}. "
            f"It is downloaded from the Hugging Face hub on first use (~55 GB of parquet into the hub cache, then "
            f"~18 GB of token files): check the network (and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, which need a "
            f"filled cache), or point --hub-id at a local copy. Nothing was written."
        ) from None


def check_complete(n_documents: int, expected: int, source: str, allow_partial: bool) -> dict:
    """Refuse (or, with ``allow_partial``, loudly flag) a source holding fewer documents than the corpus has;
    returns what meta.json records about it."""
    record = {"documents": n_documents, "expected_documents": expected}
    if n_documents >= expected:
        return record
    what = (f"{source} holds {n_documents:,} documents, but OpenWebText has {expected:,} ({n_documents / expected:.1%} of it): "
            f"a partial source (the hub's auto-converted parquet branch can hold only part of a large dataset)")
    if not allow_partial:
        raise ConfigError(f"{what}. Training on it would not reproduce the paper. Use a complete copy (--hub-id/--revision), "
                          f"or pass --allow-partial to prepare it anyway, flagged as partial in meta.json. Nothing was written.")
    print(f"WARNING: {what}; preparing it anyway (--allow-partial), flagged as partial in meta.json", file=sys.stderr)
    return {**record, "partial": True}


def _data_root() -> Path:
    return Path(os.environ.get("SOPHIA_DATA_DIR", "data"))


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be a number strictly between 0 and 1, got {text!r}")
    return v


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``prepare_data.py {corpus,openwebtext,files} ...``; problems are one paragraph, exit 2."""
    try:
        return _main(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv: Sequence[str] | None = None) -> int:


    ap = argparse.ArgumentParser(description="Tokenize a corpus into train.bin / val.bin / meta.json.")
    sub = ap.add_subparsers(dest="source", required=True)
    c = sub.add_parser("corpus", help="the embedded default corpus (no network needed)")
    c.add_argument("--corpus-file", help="use this text file instead (also: SOPHIA_CORPUS)")
    c.add_argument("--val-fraction", type=_fraction, default=0.1)
    o = sub.add_parser("openwebtext", help="OpenWebText from the Hugging Face hub (GPT-2 BPE)")
    o.add_argument("--hub-id", default=OWT_HUB_ID)
    o.add_argument("--revision", default=OWT_REVISION)
    o.add_argument("--val-fraction", type=_fraction, default=0.0005)  # nanoGPT's split
    o.add_argument("--allow-partial", action="store_true", help="prepare even if the source lacks documents (flagged in meta.json)")
    o.add_argument("--expected-documents", type=int, default=OWT_DOCUMENTS, help=argparse.SUPPRESS)
    f = sub.add_parser("files", help="local .txt / .jsonl / .parquet files")
    f.add_argument("name", help="dataset name: written to <data root>/<name> unless --out is given")
    f.add_argument("files", nargs="+")
    f.add_argument("--text-field", default="text")
    f.add_argument("--val-fraction", type=_fraction, default=0.05)
    for p in (c, f):
        p.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                       help="text that is not UTF-8: refuse it (strict) or replace each bad byte with U+FFFD and report the count")
    for p in (c, o, f):
        p.add_argument("--tokenizer", choices=["byte", "gpt2"], default="gpt2" if p is not c else "byte")
        p.add_argument("--out", help="output folder (default: $SOPHIA_DATA_DIR or data/, then the name)")
        p.add_argument("--num-proc", type=int, default=min(8, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    text_field, meta_extra = "text", {}
    if args.source == "corpus":
        path = corpus_path(args.corpus_file)
        if path and Path(path).is_file():  # a missing file is reported by default_corpus_text
            check_encoding([path], args.encoding_errors)
        text, source = default_corpus_text(path, args.encoding_errors)
        docs = [d.strip() for d in text.split("\n\n") if d.strip()]
        if not docs:
            raise ConfigError(f"the corpus {source} holds no text. Nothing was written.")
        dataset = Dataset.from_dict({"text": docs})
        name = "corpus" if args.tokenizer == "byte" else f"corpus_{args.tokenizer}"
    elif args.source == "openwebtext":
        dataset, source, name = load_openwebtext(args.hub_id, args.revision, args.num_proc), args.hub_id, "openwebtext"
        meta_extra = check_complete(len(dataset), args.expected_documents, source, args.allow_partial)
        if args.tokenizer != "gpt2":
            name = f"openwebtext_{args.tokenizer}"
    else:
        check_out_dir(Path(args.out) if args.out else _data_root() / args.name)
        dataset = load_local_files(args.files, args.text_field, args.encoding_errors)
        source, name, text_field = ", ".join(args.files), args.name, args.text_field
    out = Path(args.out) if args.out else _data_root() / name
    check_out_dir(out)
    print(f"preparing {name} from {source}: {len(dataset):,} documents -> {out}")
    counts = prepare_hf_dataset(
        dataset, out, args.tokenizer, val_fraction=args.val_fraction, text_field=text_field,
        num_proc=args.num_proc, source=source, meta_extra=meta_extra,
    )
    print(f"wrote {out}: train {counts['train']:,} tokens, val {counts['val']:,} tokens ({args.tokenizer})")
    return 0
