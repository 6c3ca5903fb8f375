#!/usr/bin/env python
"""Per-rank memory of parameters, gradients and optimizer state under DDP and FSDP (computed from the real
model and optimizer on the meta device; ``--measure-data DIR`` also measures a tiny CPU run)."""

from sophia_train.studies.memory import main

if __name__ == "__main__":
    raise SystemExit(main())
