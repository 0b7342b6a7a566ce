"""Atomic file writes: a temp file in the destination folder, fsync, then ``os.replace``.

A crash, a cancel or a full disk never leaves a half-written file under the final name, and an existing file
is only replaced once its successor is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from PIL import Image

from .errors import UserError


class DiskWriteError(UserError, OSError):
    """A write failed (full disk, quota, no permission); the message names the file and what to do."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


# Quota exhaustion reads like a full disk to the user; EDQUOT is missing from some platforms' errno.
_DISK_FULL = {errno.ENOSPC: "No space left on the disk"} | (
    {errno.EDQUOT: "Disk quota exceeded"} if hasattr(errno, "EDQUOT") else {}
)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_OS_ERROR = re.compile(r"os error (\d+)")


def disk_write_error(err: OSError, path: Path) -> DiskWriteError | None:
    """The ``DiskWriteError`` for a failed write of ``path`` the user can fix (full disk, no permission), else None."""
    if err.errno in _DISK_FULL:
        return DiskWriteError(
            err.errno,
            f"{_DISK_FULL[err.errno]} while writing {path}; free space on that disk or choose another output folder",
        )
    if err.errno in _NOT_WRITABLE:
        return DiskWriteError(err.errno, f"Cannot write {path}: permission denied; choose a writable folder")
    return None


def _reraise(err: OSError, path: Path) -> NoReturn:
    translated = disk_write_error(err, path)
    if translated is None:
        raise err
    raise translated from err


_TEMP_RE = re.compile(r"^\.(?P<final>.+)\.[0-9a-f]{32}\.tmp$")


def sweep_stale_temps(folder: Path, prefix: str = "") -> list[Path]:
    """Delete the temp files ``atomic_path`` left in ``folder`` when a process was killed mid-write.

    Only files of ``atomic_path``'s own naming whose final name starts with ``prefix`` are removed: a caller passes
    the prefix of the files only it writes (its run name), so another live writer's temp files are left alone.
    Returns the files deleted.
    """
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []:
        found = _TEMP_RE.match(path.name)
        if found and found["final"].startswith(prefix) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on failure it is removed.

    The result has the permissions a plain ``open(path, "w")`` would give (the umask's), or those of the file it
    replaces: ``tempfile.mkstemp``'s private 0600 would hide LoRAs from other users (e.g. ComfyUI in Docker).
    A full disk or an unwritable folder raises ``DiskWriteError`` naming ``path``.
    """
    final = Path(path)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"  # sweep_stale_temps knows this pattern
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # mode 0666 minus the umask
    except OSError as err:
        _reraise(err, final)
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
        _reraise(err, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` atomically to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` with safetensors' streaming writer (no second copy of the data in memory) atomically."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as err:
            # safetensors reports I/O failures as its own error type; recover the errno so a full disk reads as one.
            found = _OS_ERROR.search(str(err))
            if found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code)) from err
    return Path(path)


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Save a PIL image as PNG atomically (the temp name has no .png suffix, so the format is explicit)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
