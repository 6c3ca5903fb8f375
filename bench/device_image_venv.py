#!/usr/bin/env python
"""A virtualenv that holds what the GPU machine's image holds, and nothing of this project: the stage on
which ``DEVICE_DRY_RUN=1 bash bench/device_check.sh`` rehearses the device checks on CPU.

The image (``/work/.library/device/KINDS.md``) has torch, triton, numpy, pytest, PyYAML, tiktoken,
matplotlib, … but no hydra-core, omegaconf, antlr4, datasets or wandb, and sophia_train is not installed.
This links those distributions of the running interpreter into a fresh ``venv --without-pip`` (instant,
no download), so a missing wheel or a stray import of a package the device lacks fails here first.

    python bench/device_image_venv.py /tmp/device-venv      # then /tmp/device-venv/bin/python
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

# Distributions the device image has that the checks (or torch itself) import; the rest of the image
# (jax, cupy, …) is left out because nothing here uses it.
IMAGE = ("torch", "triton", "numpy", "filelock", "typing_extensions", "sympy", "mpmath", "networkx", "Jinja2",
         "MarkupSafe", "fsspec", "setuptools", "pytest", "pluggy", "iniconfig", "packaging", "pygments", "PyYAML",
         "tiktoken", "regex", "requests", "urllib3", "certifi", "charset-normalizer", "idna", "tqdm")


def top_level_entries(dist: metadata.Distribution) -> set[str]:
    """The names a distribution puts directly into site-packages (packages, modules, .libs, its dist-info)."""
    return {f.parts[0] for f in dist.files or () if f.parts[0] not in ("..", "__pycache__") and not f.parts[0].endswith(".pth")}


def build(dest: Path) -> Path:
    """Create the venv at ``dest`` with the image's distributions linked in; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    python = dest / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    here = Path(sysconfig.get_paths()["purelib"])
    linked = []
    for name in IMAGE:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. triton on a machine without it: the checks that need it say so
        root = Path(str(dist.locate_file("")))
        for entry in top_level_entries(dist):
            source = root / entry
            if source.exists() and not (site / entry).exists():
                os.symlink(source, site / entry)
        linked.append(f"{name} {dist.version}")
    print(f"device-image venv at {dest} (from {here}): {', '.join(linked)}")
    return python


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    build(Path(sys.argv[1]).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
