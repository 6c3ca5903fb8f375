#!/usr/bin/env python
"""Sample text from a trained run: `python scripts/sample.py runs/demo --prompt "And God said" -n 300`."""

import argparse
import sys

from sophia_train.config import ConfigError
from sophia_train.sample import generate_text

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", help="run folder (holding ckpt.pt) or a checkpoint file")
    ap.add_argument("--prompt", default="\n")
    ap.add_argument("-n", "--max-new-tokens", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        print(generate_text(args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed))
    except ConfigError as e:
        sys.exit(f"error: {e}")
