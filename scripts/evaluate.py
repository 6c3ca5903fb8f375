#!/usr/bin/env python
"""Downstream evaluation with EleutherAI's lm-evaluation-harness on a run's exported model."""

from sophia_train.interop.evaluate import main

if __name__ == "__main__":
    main()
