#!/usr/bin/env python
"""Plot runs' loss curves (and optionally the paper's diagnostics) into PNGs.

    python scripts/plot_runs.py runs/A runs/B -o curves.png [--x step|tokens|time] [--val-only]
    python scripts/plot_runs.py runs/A runs/B --diagnostics diag.png
    python scripts/plot_runs.py runs/gpt2_small-* --paper      # with the paper's Fig. 4 endpoints
"""

from sophia_train.plotting import main

if __name__ == "__main__":
    main()
