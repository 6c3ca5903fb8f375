#!/usr/bin/env python
"""Plot the loss curves of runs: `python scripts/plot_runs.py runs/A runs/B -o curves.png`."""

import argparse

from sophia_train.plotting import plot_runs

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", help="run folders (or metrics.jsonl files)")
    ap.add_argument("-o", "--out", default="loss_curves.png")
    ap.add_argument("--title")
    args = ap.parse_args()
    print(plot_runs(args.runs, args.out, title=args.title))
