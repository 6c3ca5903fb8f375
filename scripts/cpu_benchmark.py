#!/usr/bin/env python
"""Tune AdamW, Lion, Sophia-G, Sophia-H and S3 on the tiny GPT and apply the paper's T/2-vs-T test
(see ``sophia_train/studies/cpu_study.py``).

    python scripts/cpu_benchmark.py --out results/cpu_benchmark            # ~45 min on 2 cores
    python scripts/cpu_benchmark.py --optims sophia_g                      # retune one, keep the others
"""

from sophia_train.studies.cpu_study import main

if __name__ == "__main__":
    main()
