#!/usr/bin/env python
"""Prepare a token dataset: `python scripts/prepare_data.py {corpus,openwebtext,files} --help`."""

import sys

from sophia_train.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
