"""``sophia-convert-ckpt RUN [--out FILE]``: an FSDP run's sharded checkpoint (``RUN/ckpt.dcp``) as one
``ckpt.pt`` file, for tools that read the one-file layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from sophia_train.checkpoint import checkpoint_at, save_checkpoint
from sophia_train.checkpoint import sharded as sharded


def main(argv: list[str] | None = None) -> int:
    """``sophia-convert-ckpt RUN [--out FILE]``: write an FSDP run's sharded checkpoint as one file."""
    ap = argparse.ArgumentParser(description="Turn a sharded (FSDP) checkpoint into the one-file ckpt.pt layout.")
    ap.add_argument("run", help="run folder of an FSDP run, or its ckpt.dcp / best.dcp folder")
    ap.add_argument("--out", help="file to write (default: RUN/ckpt.pt, or best.pt for best.dcp)")
    args = ap.parse_args(argv)
    source = checkpoint_at(args.run)
    folder = sharded.latest(source) if (source / sharded.LATEST).is_file() else None
    if folder is None:
        raise SystemExit(f"error: {args.run} holds no sharded checkpoint (a ckpt.dcp folder with a LATEST file).")
    out = Path(args.out) if args.out else source.parent / ("best.pt" if source.name == sharded.BEST_SHARDED_NAME else "ckpt.pt")
    state = sharded.to_single_file(folder)
    save_checkpoint(state, out)
    print(f"wrote {out}: step {state['step']}, {len(state['model'])} tensors of weights, optimizer state for "
          f"{len(state['optimizer']['state'])} parameters (from {folder})")
    return 0
