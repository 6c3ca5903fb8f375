#!/usr/bin/env python
"""Reproduce the Sophia paper's Figure 2 and the lecture's contour / saddle comparisons as PNGs.

    python scripts/toy_2d.py --out results/toy
"""

from sophia_train.studies.toy_2d import main

if __name__ == "__main__":
    main()
