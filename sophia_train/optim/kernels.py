"""The Triton kernels of the top-level ``kernels/`` folder, as the package ``sophia_train_kernels``
(``kernels/sophia_train_kernels/``).

An installed sophia_train ships them under that name (``pip install .``; a PyPI package called
``kernels`` exists, and transformers 5 imports it: ``kernels/`` has no ``__init__.py``, so running anything from
the repository root never shadows it). In a plain checkout on the path
(``PYTHONPATH=<repo>``, as on a machine that only runs the device checks) nothing is installed: the folder
is then loaded under the same name from beside the package, so ``sophia_train_kernels`` means the same
code either way. Loaded on first use: importing triton is not free.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

NAME = "sophia_train_kernels"


def kernels() -> ModuleType:
    """The ``sophia_train_kernels`` package: the installed one, else the checkout's ``kernels/sophia_train_kernels/``."""
    if NAME in sys.modules:
        return sys.modules[NAME]
    try:
        return importlib.import_module(NAME)
    except ModuleNotFoundError as e:
        if e.name != NAME:
            raise
    folder = Path(__file__).resolve().parents[2] / "kernels" / NAME
    spec = importlib.util.spec_from_file_location(NAME, folder / "__init__.py", submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"the Triton kernels are neither installed ({NAME}) nor at {folder}", name=NAME)
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[NAME]
        raise
    return module
