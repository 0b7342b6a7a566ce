"""Paths a node takes from a browser, kept inside the folders it may read (the CLI's user may name any file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError


def within_roots(value: str, setting: str, roots: Sequence[Path], relative_to: Sequence[Path]) -> list[Path]:
    """The places ``value`` names, each inside one of ``roots`` once symbolic links are resolved.

    An absolute ``value`` names one place, a relative one a place under each folder of ``relative_to``. When any of
    them lies outside (an absolute path elsewhere, a ``..`` climb, a link out), ``ConfigError`` names the setting,
    the value and the roots, alike whether or not anything exists there, so it reveals nothing about other folders.
    A value the operating system cannot take as a path (a null byte, a link loop) is a ``ConfigError`` too.
    """
    path = Path(value.strip()).expanduser()
    candidates = [path] if path.is_absolute() else [base / path for base in relative_to]
    if not all(any(resolved(c, setting, value).is_relative_to(root.resolve()) for root in roots) for c in candidates):
        where = ", ".join(str(root) for root in roots)
        raise ConfigError(
            f"{setting} {value.strip()!r} lies outside the folders this node reads from ({where}): move the file "
            "into one of them and give its path there"
        )
    return candidates


def resolved(path: Path, setting: str, value: str) -> Path:
    """``path`` with symbolic links and ``..`` resolved. ``ConfigError`` naming ``setting`` and the ``value`` it came
    from when the name cannot be a path: ``ValueError`` (a null byte), ``OSError`` (a name too long), ``RuntimeError``
    (a symbolic link loop) would otherwise reach the user as a traceback."""
    try:
        return path.resolve()
    except (ValueError, OSError, RuntimeError) as err:
        raise ConfigError(
            f"{setting} {value.strip()!r} cannot be used as a path ({err}): give the name of a file, without control "
            "characters"
        ) from None
