"""Atomic file writes: a temp file in the destination folder, fsync, then ``os.replace``.

A crash, a cancel or a full disk never leaves a half-written file under the final name, and an existing file
is only replaced once its successor is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image


class DiskWriteError(OSError):
    """A write failed (full disk, no permission); the message names the file and what to do."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on failure it is removed.

    The result has the permissions a plain ``open(path, "w")`` would give (the umask's), or those of the file it
    replaces: ``tempfile.mkstemp``'s private 0600 would hide LoRAs from other users (e.g. ComfyUI in Docker).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # mode 0666 minus the umask
    try:
        # Read back rather than asked of os.umask() (not thread-safe); writers such as safetensors may replace
        # the temp file with their own 0600 one, so the mode is set again at the end.
        mode = (final if final.exists() else tmp).stat().st_mode & 0o7777
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.chmod(mode)
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


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Save a PIL image as PNG atomically (the temp name has no .png suffix, so the format is explicit)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
