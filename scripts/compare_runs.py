#!/usr/bin/env python
"""The paper's T/2-vs-T comparison (Sec. 3.2) over run folders, printed as Markdown.

    python scripts/compare_runs.py results/cpu_benchmark --baseline adamw --steps 800 [-o table.md]
"""

import argparse
from pathlib import Path

from sophia_train.compare import find_runs, markdown_report

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", help="folders searched for runs (config.yaml + metrics.jsonl)")
    ap.add_argument("--baseline", default="adamw", help="optimizer A, run for T steps")
    ap.add_argument("--steps", type=int, required=True, help="T; candidates are read at T/2")
    ap.add_argument("-o", "--out", help="also write the report to this file")
    args = ap.parse_args()
    runs = find_runs(args.roots)
    if not runs:
        raise SystemExit(f"no runs (config.yaml + metrics.jsonl) under {', '.join(args.roots)}")
    report = markdown_report(runs, args.baseline, args.steps)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
