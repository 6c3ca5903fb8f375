#!/usr/bin/env python
"""Sample text from a trained run: `python scripts/sample.py runs/demo --prompt "And God said" -n 300`."""

from sophia_train.interop.sample import main

if __name__ == "__main__":
    main()
