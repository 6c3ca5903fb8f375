"""The embedded default corpus: real English text obtained without any network access.

Where it comes from, first match wins:
1. the file named by ``SOPHIA_CORPUS`` (or ``--corpus-file``), e.g. tinyshakespeare's input.txt;
2. the King James Bible from Debian's ``bible-kjv`` package (~4.4 MB), installed on demand with
   apt-get when running as root on a Debian/Ubuntu machine;
3. the English documentation shipped with CPython itself (``pydoc_data``, ~0.7 MB), present on
   every Python install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from pydoc_data.topics import topics

from sophia_train.errors import ConfigError


def _kjv_text() -> str | None:
    if shutil.which("bible") is None and shutil.which("apt-get") and os.geteuid() == 0:
        print("installing Debian's bible-kjv package for the default corpus ...", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "bible-kjv"], env=env, capture_output=True)
        if shutil.which("bible") is None:  # package lists may be stale or absent
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "bible-kjv"], env=env, capture_output=True)
    if shutil.which("bible") is None:
        return None
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True, text=True)
    if out.returncode != 0 or len(out.stdout) < 1_000_000:
        return None
    chapters: list[list[str]] = []
    last = None
    for line in out.stdout.splitlines():
        m = re.match(r"^(\w+?)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        key = (m.group(1), m.group(2))
        if key != last:
            chapters.append([])
            last = key
        chapters[-1].append(m.group(4).strip())
    return "\n\n".join(" ".join(c) for c in chapters)


def _python_docs_text() -> str:
    return "\n\n".join(topics[k].strip() for k in sorted(topics))


def corpus_path(corpus_file: str | None = None) -> str | None:
    """The corpus file asked for (``--corpus-file``, else ``SOPHIA_CORPUS``), or None for the embedded one."""
    return corpus_file or os.environ.get("SOPHIA_CORPUS") or None


def default_corpus_text(corpus_file: str | None = None, encoding_errors: str = "strict") -> tuple[str, str]:
    """``(text, source)`` of the default corpus; paragraphs separated by blank lines."""

    path = corpus_path(corpus_file)
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"corpus file {p} (from --corpus-file or SOPHIA_CORPUS) does not exist. Nothing was written.")
        return p.read_text(encoding="utf-8", errors=encoding_errors), str(p)
    text = _kjv_text()
    if text:
        return text, "King James Bible (Debian bible-kjv)"
    return _python_docs_text(), "CPython documentation (pydoc_data.topics)"
