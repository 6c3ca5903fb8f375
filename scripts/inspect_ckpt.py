#!/usr/bin/env python
"""Print what a checkpoint holds: step, model, optimizer, data, val loss: ``sophia-inspect RUN [--config] [--json]``."""

from sophia_train.checkpoint.inspect_ckpt import main

if __name__ == "__main__":
    main()
