"""Finding the dataset's media files and captions: a folder with ``.txt`` sidecars, or an ltx-trainer manifest.

``list_sources(path) -> SourceListing`` accepts
- a folder of clips and images, each with a same-named ``.txt`` caption (``clip_001.mp4`` + ``clip_001.txt``);
- an ltx-trainer manifest file: ``.json`` (a list of objects), ``.jsonl`` (one object per line) or ``.csv``,
  with a ``video`` (or legacy ``media_path``, or the LTX-2 LoRA tutorial's ``video_path``) column and a ``caption``
  column, paths relative to the manifest (ltx-trainer's ``audio``, ``reference_audio`` and mask columns are refused);
- a folder holding exactly one ``dataset.json`` / ``dataset.jsonl`` / ``dataset.csv``, which is then used.

IC-LoRA references: a manifest's ``reference_video`` (legacy ``ref_media_path``) column, under the same
containment rules as ``video`` (an empty cell: no reference), and/or a references folder whose files are matched
to the clips by file name stem (a clip without a match there is excluded, naming both).

Problems with one entry never stop the listing: the entry carries ``problem`` (why it is excluded), e.g. a
missing file, a path that leaves the dataset folder (refused: an absolute path elsewhere, ``..`` or a symbolic
link out of it, media or caption file alike), a folder named like a clip, a second entry for a file already
listed (``duplicate``), an identical copy of another file, or a caption file that is not UTF-8. A manifest that
cannot be read at all raises ``ConfigError``. Nothing here writes to the dataset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import ConfigError
from .media import MEDIA_EXTENSIONS

MANIFEST_SUFFIXES = (".json", ".jsonl", ".csv")
MANIFEST_NAMES = tuple(f"dataset{s}" for s in MANIFEST_SUFFIXES)
# ltx-trainer's column name first, then its legacy name and the LTX-2 LoRA tutorial's (which ltx-trainer refuses).
MEDIA_COLUMNS = ("video", "media_path", "video_path")
# ltx-trainer columns whose roles this trainer does not build: refused (naming the reason) rather than ignored.
UNSUPPORTED_COLUMNS = {
    "audio": "separate audio files are not read: the audio comes from each video's own track (mux it into the video)",
    "reference_audio": "audio references (audio IC-LoRA) are not built",
    "video_mask": "masked (inpainting) training is not built",
    "audio_mask": "masked (inpainting) training is not built",
}
REFERENCE_COLUMNS = ("reference_video", "ref_media_path")
_HEAD_BYTES = 1 << 16


@dataclass(frozen=True)
class SourceEntry:
    """One listed media file. ``rel`` (POSIX, relative to the dataset root) doubles as the item's stable id."""

    rel: str
    path: Path
    caption: str | None
    caption_origin: str
    problem: str | None = None
    reference: Path | None = None  # IC-LoRA reference (control) video
    reference_rel: str | None = None  # how the report names it (relative to the dataset root where inside it)


@dataclass(frozen=True)
class SourceListing:
    """All entries of a dataset and where they came from (``kind``: ``"folder"`` or the manifest's name)."""

    root: Path
    kind: str
    entries: tuple[SourceEntry, ...]
    ignored: tuple[str, ...] = ()


def read_caption_file(path: Path) -> tuple[str | None, str | None]:
    """(caption, problem): ``(None, None)`` when the file is absent; a problem when it is not UTF-8."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        return data.decode("utf-8-sig").strip(), None
    except UnicodeDecodeError as err:
        bad = data[err.start : err.start + 1].hex()
        return None, (
            f"caption file {path.name} is not UTF-8 text (byte 0x{bad} at position {err.start}); re-save it as "
            "UTF-8 (most editors offer 'Save with encoding')"
        )


def _leaves(path: Path, root: Path) -> bool:
    """Whether ``path`` ends up outside ``root`` once symbolic links are followed."""
    return not path.resolve().is_relative_to(root.resolve())


def _folder_entries(root: Path) -> tuple[list[SourceEntry], list[str]]:
    entries, ignored = [], []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.suffix.lower() not in MEDIA_EXTENSIONS:
            if p.is_file() and p.suffix.lower() != ".txt":
                ignored.append(p.name)
            continue
        # A folder or link named like a clip is listed too: _mark_missing_and_duplicates says what is wrong with it.
        sidecar = p.with_suffix(".txt")
        if sidecar.exists() and _leaves(sidecar, root):
            caption, problem = None, (
                f"caption file {sidecar.name} is a symbolic link out of the dataset folder {root}; refused "
                "(copy the caption file in)"
            )
        else:
            caption, problem = read_caption_file(sidecar)
        problem = f"{p.name}: {problem}" if problem else None
        entries.append(SourceEntry(p.name, p, caption, f"sidecar {sidecar.name}", problem))
    return entries, ignored


def _manifest_rows(manifest: Path) -> list[tuple[str, dict | None, str | None]]:
    """(where, row, problem) per record; a problem is set for a record that cannot be parsed."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"manifest {manifest} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    suffix = manifest.suffix.lower()
    if suffix == ".csv":
        # Read as one stream, not line by line: a quoted caption may span lines (pandas, which ltx-trainer uses,
        # writes and reads them so).
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [(f"row {i}", dict(row), None) for i, row in enumerate(reader, start=2)]
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                rows.append((f"line {i}", None, f"line {i} of {manifest.name} is not valid JSON ({err.msg})"))
                continue
            rows.append((f"line {i}", obj, None))
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"manifest {manifest} is not valid JSON: {err.msg} at line {err.lineno}") from None
    if not isinstance(data, list):
        raise ConfigError(f"manifest {manifest} must hold a JSON list of objects, not {type(data).__name__}")
    return [(f"entry {i}", obj, None) for i, obj in enumerate(data, start=1)]


def _resolve_inside(root: Path, value: str) -> tuple[Path, str | None]:
    """The path ``value`` names under ``root`` and, if it leaves ``root``, why it is refused."""
    candidate = Path(os.path.normpath(root / value))
    try:
        rel = candidate.relative_to(root)
    except ValueError:
        return candidate, f"path {value!r} points outside the dataset folder {root}; refused (copy the file in)"
    if not rel.parts:
        return candidate, f"path {value!r} names the dataset folder itself"
    if _leaves(candidate, root):
        return candidate, (
            f"path {value!r} points outside the dataset folder {root} through a symbolic link; refused (copy the "
            "file in)"
        )
    return candidate, None


def _manifest_entries(manifest: Path) -> list[SourceEntry]:
    root = Path(os.path.normpath(manifest.parent.absolute()))
    rows = _manifest_rows(manifest)
    columns = {k for _, row, _ in rows if isinstance(row, dict) for k in row}
    media_col = next((c for c in MEDIA_COLUMNS if c in columns), None)
    ref_col = next((c for c in REFERENCE_COLUMNS if c in columns), None)
    if rows and media_col is None:
        raise ConfigError(
            f"manifest {manifest} has no video column: name it 'video' ('media_path' and 'video_path' are read too) "
            f"(found: {', '.join(sorted(columns)) or 'none'})"
        )
    filled = {k for _, row, _ in rows if isinstance(row, dict) for k, v in row.items() if str(v or "").strip()}
    used = [c for c in UNSUPPORTED_COLUMNS if c in filled]
    if used:
        raise ConfigError(
            f"manifest {manifest}: " + "; ".join(f"column '{c}': {UNSUPPORTED_COLUMNS[c]}" for c in used)
            + f". Accepted columns: {', '.join(MEDIA_COLUMNS)} (the clip), caption, "
            f"{', '.join(REFERENCE_COLUMNS)} (IC-LoRA reference); remove the others"
        )
    entries = []
    for where, row, problem in rows:
        origin = f"{manifest.name} {where}"
        if problem is None and not isinstance(row, dict):
            problem = f"{where} of {manifest.name} is not an object with '{media_col}' and 'caption'"
        value = str(row.get(media_col) or "").strip() if problem is None else ""
        if problem is None and not value:
            problem = f"{where} of {manifest.name} has no '{media_col}' value"
        if problem:
            entries.append(SourceEntry(f"<{where}>", manifest, None, origin, problem))
            continue
        path, problem = _resolve_inside(root, value)
        rel = path.relative_to(root).as_posix() if problem is None else value
        caption = row.get("caption")
        caption = None if caption is None else str(caption).strip()
        ref_value = str(row.get(ref_col) or "").strip() if ref_col else ""
        ref_path, ref_rel = None, None
        if ref_value:
            ref_path, ref_problem = _resolve_inside(root, ref_value)
            ref_rel = ref_path.relative_to(root).as_posix() if ref_problem is None else ref_value
            if problem is None and ref_problem:
                problem = f"{rel}: reference video ({ref_col}) {ref_problem}"
        entries.append(SourceEntry(rel, path, caption, origin, problem, ref_path, ref_rel))
    return entries


def _match_references(entries: list[SourceEntry], root: Path, folder: str) -> list[SourceEntry]:
    """Give each entry without a reference the file of ``folder`` with its file name stem (see the docstring)."""
    refs = Path(folder).expanduser()
    refs = Path(os.path.normpath(refs if refs.is_absolute() else root / refs))
    if not refs.is_dir():
        raise ConfigError(f"references_dir {folder} is not a folder (looked at {refs}); set it to the folder of "
                          "reference videos, or leave it empty")
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(refs.iterdir()):
        if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS:
            by_stem.setdefault(p.stem, []).append(p)

    def shown(p: Path) -> str:
        return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)

    out = []
    for e in entries:
        if e.problem is None and e.reference is None:
            found = by_stem.get(e.path.stem, [])
            if len(found) == 1:
                e = replace(e, reference=found[0], reference_rel=shown(found[0]))
            else:
                names = ", ".join(p.name for p in found)
                why = f"several match ({names}); keep one" if found else "add it, or remove the clip"
                e = replace(e, problem=f"{e.rel}: no single reference video {e.path.stem}.* in {refs}: {why}")
        out.append(e)
    return out


def _content_key(path: Path) -> tuple[int, str] | None:
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
            fh.seek(max(0, size - _HEAD_BYTES))
            tail = fh.read(_HEAD_BYTES)
    except OSError:
        return None
    return size, hashlib.sha1(head + tail, usedforsecurity=False).hexdigest()


def _file_problem(e: SourceEntry, root: Path) -> str | None:
    """Why ``e.path`` is not a media file inside ``root`` that can be read, or None."""
    if _leaves(e.path, root):
        return f"{e.rel} is a symbolic link out of the dataset folder {root}; refused (copy the file in)"
    if e.path.is_dir():
        return f"{e.rel} is a folder, not a media file ({e.caption_origin}); rename or remove it"
    if e.path.is_symlink() and not e.path.exists():
        return f"{e.rel} is a symbolic link to a file that does not exist ({e.caption_origin})"
    if not e.path.exists():
        return f"media file {e.rel} not found at {e.path} ({e.caption_origin})"
    if not e.path.is_file():
        return f"{e.rel} is not a regular file (a device, pipe or socket); replace it with the media file"
    return None


def _mark_missing_and_duplicates(entries: list[SourceEntry], root: Path) -> list[SourceEntry]:
    seen_path: dict[Path, str] = {}
    seen_content: dict[tuple[int, str], str] = {}
    out = []
    for e in entries:
        problem = _file_problem(e, root) if e.problem is None else None
        if problem is not None:
            e = replace(e, problem=problem)
        if e.problem is None and e.reference is not None and not e.reference.is_file():
            e = replace(e, problem=f"{e.rel}: reference video {e.reference_rel} not found at {e.reference} "
                                   f"({e.caption_origin})")
        if e.problem is None and e.path in seen_path:
            first = seen_path[e.path]
            e = replace(e, problem=f"duplicate entry: {e.rel} ({e.caption_origin}) is already listed ({first})")
        if e.problem is None:
            seen_path[e.path] = e.caption_origin
            key = _content_key(e.path) if e.path.stat().st_size > 0 else None
            if key in seen_content:
                e = replace(e, problem=f"duplicate content: {e.rel} is an identical copy of {seen_content[key]}")
            elif key is not None:
                seen_content[key] = e.rel
        out.append(e)
    return out


def _unique_ids(entries: list[SourceEntry]) -> list[SourceEntry]:
    counts: dict[str, int] = {}
    out = []
    for e in entries:
        n = counts.get(e.rel, 0)
        counts[e.rel] = n + 1
        out.append(e if n == 0 else replace(e, rel=f"{e.rel}#{n + 1}"))
    return out


def check_dataset_path(path: str | Path) -> None:
    """Raise ConfigError when ``path`` cannot be a dataset (empty, missing, a file that is no manifest)."""
    if not str(path).strip():
        raise ConfigError("dataset path is empty: set it to a folder of clips or a dataset.json/.jsonl/.csv")
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"dataset path {path} does not exist")
    if not p.is_dir() and p.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ConfigError(f"{p} is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")


def list_sources(path: str | Path, references_dir: str = "") -> SourceListing:
    """List every media entry of the dataset at ``path`` (folder or manifest); see the module docstring.

    ``references_dir``: the IC-LoRA references folder (relative: to the dataset root), empty for none.
    """
    check_dataset_path(path)
    p = Path(path).expanduser()
    if p.is_dir():
        manifests = [p / n for n in MANIFEST_NAMES if (p / n).is_file()]
        if len(manifests) > 1:
            raise ConfigError(f"{p} holds several manifests ({', '.join(m.name for m in manifests)}); pass one file")
        if not manifests:
            root = Path(os.path.normpath(p.absolute()))
            entries, ignored = _folder_entries(root)
            if references_dir.strip():
                entries = _match_references(entries, root, references_dir.strip())
            return SourceListing(root, "folder", tuple(_unique_ids(_mark_missing_and_duplicates(entries, root))),
                                 tuple(ignored))
        p = manifests[0]
    entries = _manifest_entries(p)
    root = Path(os.path.normpath(p.parent.absolute()))
    if references_dir.strip():
        entries = _match_references(entries, root, references_dir.strip())
    return SourceListing(root, p.name, tuple(_unique_ids(_mark_missing_and_duplicates(entries, root))))


def dataset_fingerprint(path: str | Path) -> str:
    """A cheap hash of names, sizes and modification times under the dataset's folder (changes when files do)."""
    p = Path(path).expanduser()
    root = p if p.is_dir() else p.parent
    h = hashlib.sha256(str(p).encode())
    if root.is_dir():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                st = (Path(dirpath) / name).lstat()
                h.update(f"{Path(dirpath, name).relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
