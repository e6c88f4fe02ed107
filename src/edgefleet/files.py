"""The one way edgefleet replaces a file: whole or not at all, even across a crash."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a temp file beside it (created with ``mode``), fsync,
    rename over ``path``, fsync the directory. A reader, or the next start after a crash, sees
    the old content or the new, never a mix. ``durable`` False skips the directory's fsync (the
    new name may be lost in a crash, the old content stays whole).

    The temp file is created with ``mode`` and kept to it (a temp file a crash left behind keeps
    its mode), so a secret is never readable by others, not even for an instant.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with open(fd, "wb") as handle:
        os.fchmod(fd, mode)
        handle.write(data)
        handle.flush()
        os.fsync(fd)
    os.replace(tmp, path)
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
