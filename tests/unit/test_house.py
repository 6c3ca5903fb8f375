"""The house rules that keep the package readable and installable: small files and functions, every
package folder a package that pyproject.toml ships, tests laid out by the folder they test."""

from __future__ import annotations

import ast
import re

from conftest import REPO

PACKAGE = REPO / "sophia_train"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def python_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_file_over_400_lines_and_no_function_over_60():
    too_long = []
    for path in python_files():
        text = path.read_text()
        name = path.relative_to(REPO)
        if text.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "split these by job:\n" + "\n".join(too_long)


def test_every_package_folder_is_a_package_that_pyproject_ships():
    folders = {p.parent for p in python_files()}
    missing_init = sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").exists())
    assert not missing_init, f"folders of modules without __init__.py (setuptools would leave them out): {missing_init}"
    block = re.search(r"^packages = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.S | re.M).group(1)  # no tomllib on 3.10
    listed = set(re.findall(r'"([\w.]+)"', block))
    dotted = {".".join(f.relative_to(REPO).parts) for f in folders}
    assert dotted <= listed, f"packages missing from [tool.setuptools] packages: {sorted(dotted - listed)}"


def test_tests_mirror_the_package_and_have_unique_names():
    tests = sorted((REPO / "tests").rglob("test_*.py"))
    names = [t.name for t in tests]
    assert len(names) == len(set(names)), "two test files share a name (pytest's rootdir imports need unique ones)"
    for t in tests:
        part = t.relative_to(REPO / "tests").parts[0]
        assert part in ("unit", "integration"), f"{t.relative_to(REPO)}: put it under tests/unit/<folder> or tests/integration"
    for folder in (REPO / "tests" / "unit").iterdir():
        if folder.is_dir() and not folder.name.startswith("__"):
            assert (PACKAGE / folder.name).is_dir() or folder.name == "kernels", f"tests/unit/{folder.name} mirrors no package folder"
    workers = [p for p in (REPO / "tests" / "workers").glob("*.py")]
    assert workers and not any(re.match(r"test_", p.name) for p in workers)


def test_no_top_level_folder_shadows_an_installed_package_when_run_from_the_repository_root():
    """`python -m sophia_train` puts the repository root first on sys.path, so a root folder with an __init__.py
    named like a PyPI package wins over it: kernels/__init__.py once hid Hugging Face's `kernels`, which
    transformers 5 imports, and every export and lm-eval run from the checkout failed."""
    import subprocess
    import sys

    probe = "import importlib.util; print(getattr(importlib.util.find_spec('kernels'), 'origin', None))"
    roots = sorted(p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert roots == ["sophia_train"], f"top-level packages besides sophia_train: {roots}"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    origin = done.stdout.strip()
    assert not origin.startswith(str(REPO / "kernels")), f"`import kernels` run from the repository root finds {origin}"
