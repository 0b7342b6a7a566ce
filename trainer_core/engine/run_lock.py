"""One training run per run folder: a lock file created atomically (``O_EXCL``) for the whole run.

Two runs writing into the same folder would overwrite each other's checkpoints, ``config.yaml`` and loss history
without a word, so the second is refused at once, naming the live run (pid, host, start time). A lock left by a
process that is gone (same host, pid no longer running: ``kill -9``, a power cut) is taken over with a warning.
A lock from another host cannot be checked from here and is never taken over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".ltx-lora-run.lock"


class RunLockedError(UserError, RuntimeError):
    """Another live run holds the run folder's lock."""


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a process we may not signal still counts as running)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict | None:
    """The holder recorded in the lock file, or None when there is none; a damaged file raises RunLockedError."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    if not (isinstance(holder, dict) and isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str)):
        raise RunLockedError(
            f"the run folder {path.parent} holds a lock file {path.name} that cannot be read; if no training run is "
            f"writing to this folder, delete {path} and start again"
        )
    return holder


def _describe(holder: dict) -> str:
    return (
        f"pid {holder['pid']} on host {holder['host']}, started {holder.get('started', '?')}, "
        f"run name {holder.get('name', '?')!r}"
    )


def _is_stale(holder: dict) -> bool:
    return holder["host"] == socket.gethostname() and not _pid_alive(int(holder["pid"]))


def _refusal(path: Path, holder: dict) -> RunLockedError:
    return RunLockedError(
        f"the run folder {path.parent} is in use by another training run ({_describe(holder)}): wait for it to "
        f"finish or stop it, or train into another output folder or run name. If that run has ended on another "
        f"machine, delete {path}"
    )


def check_free(folder: Path) -> None:
    """Refuse (``RunLockedError``) when a live run holds ``folder``'s lock; cheap, takes nothing.

    For callers that have slow work to do before training starts (loading the model), so they fail at once.
    """
    path = Path(folder) / LOCK_NAME
    holder = _read(path)
    if holder is not None and not _is_stale(holder):
        raise _refusal(path, holder)


class RunLock:
    """Holds ``folder``'s run lock from ``__enter__`` to ``__exit__`` (finish, failure and cancel alike)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "name": name,
            "token": uuid.uuid4().hex,  # tells our lock from one that replaced it
        }

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(self.record).encode())
        finally:
            os.close(fd)
        return True

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return self
        holder = _read(self.path)
        if holder is not None and not _is_stale(holder):
            raise _refusal(self.path, holder)
        if holder is not None:
            log.warning(
                "taking over the run lock %s left by a run that is no longer alive (%s)", self.path, _describe(holder)
            )
            # Only the stale lock just read: a run that replaced it meanwhile keeps its own.
            if _read(self.path) == holder:
                self.path.unlink(missing_ok=True)
        if not self._create():
            holder = _read(self.path)
            raise _refusal(self.path, holder or {"pid": "?", "host": "?"})
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            mine = json.loads(self.path.read_text(encoding="utf-8")).get("token") == self.record["token"]
        except (OSError, ValueError):
            return  # gone or replaced: nothing of ours to remove
        if mine:
            self.path.unlink(missing_ok=True)
