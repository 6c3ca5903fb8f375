"""Atomic file writes: every file the project rewrites goes through here.

A file is written to a temp file of its own name in the same folder (``NAME.tmp.<pid>.<hex>``), flushed
to disk, then renamed over the old one (``os.replace`` is atomic on POSIX), and the folder entry is
flushed too. A crash at any moment leaves either the previous file or the new one, never a torn or empty
file; a failed write (disk full) removes its temp file and leaves the previous file as it was. Temp
files of killed processes are recognised by their name and removed by ``remove_stale_temp_files``.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TEMP_PATTERN = re.compile(r"^.+\.tmp\.\d+\.[0-9a-f]{8}$")


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The file (not folder) at ``folder`` or at one of its parents that keeps it from being a folder, if any."""
    folder = Path(folder)
    return next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)


def temp_name(path: Path) -> Path:
    """A temp file name beside ``path``, unique to this process and call."""
    return path.with_name(f"{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (renames into it) to disk, where the OS allows it."""
    try:
        dir_fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` atomically: ``write(f)`` into a unique temp file, fsync, rename over ``path``, fsync the
    folder; on failure the temp file is removed and the previous file at ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = not isinstance(e, OSError) and disk_is_full(path.parent)  # judged before the temp file frees its space
        tmp.unlink(missing_ok=True)
        if full:  # torch's zip writer reports ENOSPC as a RuntimeError ("unexpected pos ...")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    fsync_dir(path.parent)  # make the rename itself durable


def disk_is_full(folder: str | os.PathLike, margin: int = 1 << 20) -> bool:
    """Whether the filesystem of ``folder`` has less than ``margin`` bytes left for this process (root may use
    the blocks reserved for it)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize < margin


def describe_write_error(e: OSError) -> str:
    """A few words on why a write failed, for one-paragraph messages."""
    return "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``Path.write_text`` (UTF-8), atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``fig.savefig(path)`` (a matplotlib figure), atomically; the format comes from ``path``'s suffix."""
    path = Path(path)
    fmt = kwargs.pop("format", path.suffix.lstrip(".") or None)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, **kwargs))


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that killed processes left in ``folder`` (call only while owning it)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.is_file() and TEMP_PATTERN.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
