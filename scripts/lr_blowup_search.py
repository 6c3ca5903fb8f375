#!/usr/bin/env python
"""Largest peak LR that does not blow up (Sophia paper, Sec. 3.1 / App. C.1), plus the 1.25x check.

    python scripts/lr_blowup_search.py +model=gpt2_large optim=sophia_g +experiment=paper train.max_steps=2000
    python scripts/lr_blowup_search.py +model=tiny optim=adamw train.max_steps=200 --lrs 1 0.3 0.1 0.03 0.01
"""

import argparse

from sophia_train.lr_search import search

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="+", help="config overrides (as for python -m sophia_train)")
    ap.add_argument("--lrs", type=float, nargs="+", help="candidates (default: the paper's list)")
    args = ap.parse_args()
    result = search(args.overrides, args.lrs)
    print(f"largest stable LR: {result['chosen']}; 1.25x blows up: {result['check_1_25x_blows_up']}")
