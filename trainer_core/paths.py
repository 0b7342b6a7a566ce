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
    """
    path = Path(value.strip()).expanduser()
    candidates = [path] if path.is_absolute() else [base / path for base in relative_to]
    if not all(any(c.resolve().is_relative_to(root.resolve()) for root in roots) for c in candidates):
        where = ", ".join(str(root) for root in roots)
        raise ConfigError(
            f"{setting} {value.strip()!r} lies outside the folders this node reads from ({where}): move the file "
            "into one of them and give its path there"
        )
    return candidates
