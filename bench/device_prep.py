#!/usr/bin/env python
"""Everything ``bench/device_check.sh`` needs that the GPU machine's image lacks, in one git-ignored folder
to carry (``make device-prep``; default ``.device/``, at most 64 MiB with the working tree):

- ``wheels/``: hydra-core and omegaconf (pure-Python wheels, the versions installed here) and
  antlr4-python3-runtime, which PyPI has only as an sdist, built into a wheel here. The device installs them
  with ``pip install --no-index --no-deps --target``.
- ``data/corpus_gpt2/``: the bundled corpus with the GPT-2 tokenizer (the device has no ``datasets``).
- ``tiktoken_cache/``: the GPT-2 BPE files, so nothing there reaches for the network.

    python bench/device_prep.py [--out .device]
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PURE_WHEELS = ("hydra-core", "omegaconf")  # published as py3-none-any wheels
BUILT_WHEELS = ("antlr4-python3-runtime",)  # sdist only: built here (pure Python, any interpreter)
LIMIT_MIB = 60  # of the 64 MiB that travel, a margin for the working tree itself


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def wheels(out: Path) -> None:
    """Download or build the wheels the image lacks, pinned to the versions this checkout is tested with."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pins = [f"{name}=={metadata.version(name)}" for name in PURE_WHEELS]
    pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "py",
        "-d", str(out), *pins)
    pip("wheel", "-q", "--no-deps", "-w", str(out), *[f"{name}=={metadata.version(name)}" for name in BUILT_WHEELS])


def tiktoken_cache(out: Path) -> None:
    """Copy the GPT-2 BPE cache ($TIKTOKEN_CACHE_DIR, else tiktoken's default cache folder)."""
    import tempfile

    source = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or Path(tempfile.gettempdir()) / "data-gym-cache")
    import tiktoken

    tiktoken.get_encoding("gpt2")  # fills the cache when it is empty and the network is there
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out)


def corpus(out: Path) -> None:
    """The bundled corpus tokenized with GPT-2 into ``out`` (what ``data=corpus_gpt2`` reads)."""
    if (out / "meta.json").is_file():
        return
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), "corpus", "--tokenizer", "gpt2",
                    "--out", str(out)], check=True)


def size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / ".device"), help="folder to carry (git-ignored; default .device)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    wheels(out / "wheels")
    tiktoken_cache(out / "tiktoken_cache")
    corpus(out / "data" / "corpus_gpt2")
    total = size_mib(out)
    for f in sorted((out / "wheels").iterdir()):
        print(f"  {f.name}")
    print(f"{out}: {total:.1f} MiB (wheels {size_mib(out / 'wheels'):.1f}, corpus {size_mib(out / 'data'):.1f}, "
          f"tiktoken {size_mib(out / 'tiktoken_cache'):.1f})")
    if total > LIMIT_MIB:
        print(f"error: {out} is {total:.1f} MiB, over the {LIMIT_MIB} MiB that may travel beside the working tree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
