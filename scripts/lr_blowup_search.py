#!/usr/bin/env python
"""Largest peak LR that does not blow up (Sophia paper, Sec. 3.1 / App. C.1), plus a real 1.25x check.

    python scripts/lr_blowup_search.py +model=gpt2_large optim=sophia_g +experiment=paper train.max_steps=2000
    python scripts/lr_blowup_search.py +model=tiny optim=adamw train.max_steps=200 --lrs 1 0.3 0.1 0.03 0.01

Trials are kept under <train.out_dir>/lr_search/ with report.md listing every one.
"""

from sophia_train.studies.lr_search import main

if __name__ == "__main__":
    main()
