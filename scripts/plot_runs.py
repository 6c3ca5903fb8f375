#!/usr/bin/env python
"""Plot runs' loss curves (and optionally the paper's diagnostics) into PNGs.

    python scripts/plot_runs.py runs/A runs/B -o curves.png [--x step|tokens|time] [--val-only]
    python scripts/plot_runs.py runs/A runs/B --diagnostics diag.png
"""

import argparse

from sophia_train.plotting import X_AXES, plot_diagnostics, plot_runs

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders (or metrics.jsonl files)")
    ap.add_argument("-o", "--out", default="loss_curves.png")
    ap.add_argument("--x", choices=sorted(X_AXES), default="step")
    ap.add_argument("--val-only", action="store_true")
    ap.add_argument("--title")
    ap.add_argument("--diagnostics", metavar="PNG", help="also plot clip share, ||h|| and grad-clip rate here")
    args = ap.parse_args()
    print(plot_runs(args.runs, args.out, title=args.title, x=args.x, val_only=args.val_only))
    if args.diagnostics:
        print(plot_diagnostics(args.runs, args.diagnostics))
