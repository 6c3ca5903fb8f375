#!/usr/bin/env python
"""What the optimizer kernels compile to for A100/H100, on a CPU-only machine: bytes per element, access
width, approximate instructions (see ``kernels/codegen.py``).

    python bench/compile_kernels.py [--arch 80 90] [--check]
"""

import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile for real: the kernels read it when imported
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a plain checkout works too

from sophia_train.optim.kernels import kernels  # noqa: E402

kernels()  # sophia_train_kernels, installed or from the checkout's kernels/ folder
from sophia_train_kernels.codegen import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
