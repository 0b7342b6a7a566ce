"""Which captions a headless cache run must encode, decided before the text encoder (Gemma 3 12B) is loaded.

A cache folder's text files are named by the text encoder's identity (a hash of its weights) and the caption, so a
caption is cached when the manifest holds an intact file of it made by that identity. Knowing the identity needs the
weights; ``text_source`` ties the files a run was given (path, size and modification time of each, the checkpoint
holding the text projection included) to the identity they had, and the manifest keeps that record. A later run
given the same files takes the identity from there: with every caption cached it loads nothing, otherwise it loads
the encoder and encodes only the captions that are missing. Other files (or the same ones changed) are loaded and
their identity computed, so a replaced file re-encodes what its weights change and nothing else. Like the source
clips (``writer._source_hash``), a file rewritten in place with its size and modification time kept is not noticed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .encoders import CacheError, TextEncoder
from .manifest import Manifest


def _stat(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def text_source(encoder_path: str | Path, checkpoint: str | Path) -> dict[str, Any]:
    """The files the text features depend on: the text encoder (a file, or every file of a folder) and the
    checkpoint whose text projection they go through, each as ``[path, size, mtime_ns]``."""
    encoder_path = Path(encoder_path)
    if not encoder_path.exists():
        raise CacheError(f"text encoder {encoder_path}: no such file or folder")
    files = sorted(p for p in encoder_path.iterdir() if p.is_file()) if encoder_path.is_dir() else [encoder_path]
    return {"text_encoder": [_stat(p) for p in files], "checkpoint": _stat(Path(checkpoint))}


class CachedTextEncoder:
    """A ``TextEncoder`` whose every caption is already in the cache: its family, width and identity come from the
    manifest's ``text_source`` record, and nothing is loaded; ``encode`` is never reached."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.family, self.width, self._identity = record["family"], int(record["width"]), record["identity"]

    def identity(self) -> str:
        return self._identity

    def encode(self, caption: str) -> Any:
        raise CacheError(f"caption {caption[:60]!r} is not in the cache, and the text encoder was not loaded")


def source_record(source: dict[str, Any], encoder: TextEncoder) -> dict[str, Any]:
    """The manifest's ``text_source``: ``source`` (``text_source``) with the identity, family and width it has."""
    return {"files": source, "identity": encoder.identity(), "family": encoder.family, "width": encoder.width}


def plan_texts(
    folder: str | Path, source: dict[str, Any], captions: Iterable[str], load: Callable[[], TextEncoder]
) -> tuple[TextEncoder, list[str]]:
    """(the text encoder, the distinct captions it must encode) for a cache run into ``folder``.

    ``captions`` are every caption the run needs (the empty one included); ``load`` builds the real encoder and is
    called only when the manifest cannot vouch for the identity of ``source``'s files or a caption is missing.
    """
    folder, wanted = Path(folder), list(dict.fromkeys(captions))
    manifest = Manifest.load(folder) if folder.is_dir() else None
    recorded = manifest.text_source if manifest is not None else None
    if recorded and recorded.get("files") == source:
        cached = manifest.text_files(folder, recorded["identity"])
        if all(c in cached for c in wanted):
            return CachedTextEncoder(recorded), []
    encoder = load()
    cached = manifest.text_files(folder, encoder.identity()) if manifest is not None else {}
    return encoder, [c for c in wanted if c not in cached]
