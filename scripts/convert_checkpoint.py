#!/usr/bin/env python
"""Write an FSDP run's sharded checkpoint (RUN/ckpt.dcp) as one ckpt.pt file: ``sophia-convert-ckpt RUN [--out FILE]``."""

from sophia_train.checkpoint.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
