#!/usr/bin/env python
"""The fair optimizer benchmark (tuned, end of training, sizes x budgets x seeds, speedups over AdamW):
``python scripts/optimizer_benchmark.py --profile quick|cpu|gpu_small [--optims ...] [--estimate]``."""

from sophia_train.studies.benchmark.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
