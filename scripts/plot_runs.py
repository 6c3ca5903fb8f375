#!/usr/bin/env python
"""Plot runs' loss curves (and optionally the paper's diagnostics) into PNGs.

    python scripts/plot_runs.py runs/A runs/B -o curves.png [--x step|tokens|time] [--val-only]
    python scripts/plot_runs.py runs/A runs/B --diagnostics diag.png
"""

from sophia_train.plotting import main

if __name__ == "__main__":
    main()
