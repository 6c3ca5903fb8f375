#!/usr/bin/env python
"""The paper's T/2-vs-T comparison (Sec. 3.2) over run folders, printed as Markdown.

    python scripts/compare_runs.py results/cpu_benchmark --baseline adamw --steps 800 [-o table.md]
    python scripts/compare_runs.py runs/ --baseline adamw --steps 100000 --paper   # beside Fig. 4's final losses
"""

from sophia_train.studies.compare_runs import main

if __name__ == "__main__":
    main()
