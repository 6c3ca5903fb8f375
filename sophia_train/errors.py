"""The project's exceptions: the one module every other may import (it imports nothing of the project)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input problem the user can fix; printed as one paragraph, no traceback."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last checkpoint on disk is untouched."""


class StoppedBySignal(RuntimeError):
    """A stop signal (SIGTERM, SIGINT, SIGUSR1) ended the run after it saved a checkpoint of its last step."""
