"""Atomic file writes: a temp file in the destination folder, fsync, then ``os.replace``.

A crash, a cancel or a full disk never leaves a half-written file under the final name, and an existing file
is only replaced once its successor is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


class DiskWriteError(OSError):
    """A write failed (full disk, no permission); the message names the file and what to do."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on failure it is removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(final)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise DiskWriteError(
                err.errno,
                f"No space left on the disk while writing {final}; free space or choose another output folder",
            ) from err
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise DiskWriteError(
                err.errno, f"Cannot write {final}: permission denied; choose a writable folder"
            ) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str, writer: Callable[[Path], None] | None = None) -> Path:
    """Write ``data`` (or call ``writer(tmp_path)``) atomically to ``path``."""
    with atomic_path(path) as tmp:
        if writer is not None:
            writer(tmp)
        else:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
