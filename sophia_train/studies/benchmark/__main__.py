"""``python -m sophia_train.studies.benchmark``: the benchmark's command line (see ``cli``)."""

from sophia_train.studies.benchmark.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
