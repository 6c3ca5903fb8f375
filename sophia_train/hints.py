"""Commands that messages suggest, phrased for where the user is: a checkout (``python scripts/X.py``,
``pip install -e '.[extra]'``) or an installed package (the ``sophia-*`` console scripts, and a pip command
that works for how it was installed, since no ``sophia_train`` is on PyPI)."""

from __future__ import annotations

import json
import os
import re
from importlib import metadata
from pathlib import Path

DIST = "sophia_train"
#: The checkout this code runs from, when it does (scripts/ and pyproject.toml beside the package).
_ROOT = Path(__file__).resolve().parent.parent

#: Checkout script -> installed console script (pyproject's [project.scripts]).
CONSOLE = {"prepare_data.py": "sophia-prepare", "sample.py": "sophia-sample", "export_hf.py": "sophia-export-hf",
           "evaluate.py": "sophia-evaluate", "inspect_ckpt.py": "sophia-inspect", "convert_checkpoint.py": "sophia-convert-ckpt"}


def in_checkout(root: Path = _ROOT) -> bool:
    """Whether the package runs from a source checkout (plain, or installed with ``pip install -e``)."""
    return (root / "pyproject.toml").is_file() and (root / "scripts").is_dir()


def script_command(script: str, args: str = "", root: Path = _ROOT) -> str:
    """``python scripts/prepare_data.py corpus`` in a checkout (the path made absolute when the current folder is
    not its root), ``sophia-prepare corpus`` for an installed package."""
    if in_checkout(root):
        path = Path("scripts") / script
        if Path.cwd().resolve() != root:
            path = root / path
        cmd = f"python {path}"
    else:
        cmd = CONSOLE.get(script, f"python -m sophia_train  # ({script} is a checkout script)")
    return f"{cmd} {args}".rstrip()


def _install_origin() -> tuple[str, str | None]:
    """How the distribution was installed: ("editable" | "dir" | "archive" | "other", the source it came from)."""
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return "none", None
    raw = dist.read_text("direct_url.json")
    if not raw:
        return "other", None
    info = json.loads(raw)
    url = info.get("url", "")
    path = url[len("file://"):] if url.startswith("file://") else None
    if info.get("dir_info", {}).get("editable"):
        return "editable", path
    if "dir_info" in info:
        return "dir", path
    return "archive", path or url


def extra_requirements(extra: str) -> list[str]:
    """The requirements the optional extra ``extra`` adds (from the installed metadata), e.g. transformers."""
    try:
        requires = metadata.requires(DIST) or []
    except metadata.PackageNotFoundError:
        return []
    pattern = re.compile(r"""extra\s*==\s*["']""" + re.escape(extra) + r"""["']""")
    return [r.split(";")[0].strip().replace(" ", "") for r in requires if pattern.search(r)]


def install_command(extra: str, packages: str, root: Path = _ROOT) -> str:
    """The pip command adding the optional extra ``extra`` (``packages`` names what it brings, for a package
    installed from somewhere pip cannot reach again)."""
    kind, source = _install_origin()
    if in_checkout(root) or kind == "editable":
        where = "." if Path.cwd().resolve() == root else str(root)
        return f"pip install -e '{where}[{extra}]'"
    if kind == "dir" and source and os.path.isdir(source):
        return f"pip install '{source}[{extra}]'"
    reqs = extra_requirements(extra)
    return f"pip install {' '.join(repr(r) if any(c in r for c in '<>=[') else r for r in reqs) if reqs else packages}"
