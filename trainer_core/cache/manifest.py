"""``manifest.json``: what a cache folder holds and what each entry was made from.

One JSON file per cache folder::

    {"format": "ltx-lora-latent-cache", "version": 1,
     "model": {"video_family", "text_family", "text_width", "vae", "text_encoder", "audio_vae"},   # identities
     "dataset": {"root", "trigger", "settings"},
     "empty_text": {"file", "bytes", "sha256", "shape", "text_encoder"} | null,
     "items": {id: ItemRecord as dict}, "failed": {id: reason},
     "text_source": {"files", "identity", "family", "width"} | null}   # headless cache only

``text_source`` ties the text encoder files a headless run was given (path, size and mtime of each) to the identity
their weights have, so a later run with the same files knows which captions are cached without loading Gemma.

An item record names its source (path, size, mtime_ns, sha256), its preparation settings (``prep``), caption
and trigger, the identities of the VAE and text encoder that made it, and its files (``latent``, ``text``,
and ``audio`` when the clip's audio was encoded) with their sizes and hashes. ``audio_vae`` is the audio
encoder's identity the audio was decided with (null: the run had no audio encoder, or skipped audio);
``audio_shape`` null means no audio latent: no audio track, a still, or audio not asked for. The manifest is
rewritten atomically; a file that exists but is not in the manifest (an interrupted run) is simply encoded again.
Records written before audio existed read as records without audio.

IC-LoRA: ``reference`` is the clip's reference (control) video latent, encoded by the same VAE at
1/``dataset.reference_downscale_factor`` of the target's size; ``reference_source`` names the reference file,
``reference_key`` hashes its identity, cut and VAE (a change re-encodes only the reference), and
``reference_shape`` null means the clip has no reference.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from .encoders import TEXT_FAMILY_LTX2, TEXT_FAMILY_LTX23, CacheError

FORMAT = "ltx-lora-latent-cache"
VERSION = 1
MANIFEST_NAME = "manifest.json"
LATENT_DIR = "latents"
TEXT_DIR = "text"
AUDIO_DIR = "audio"
REFERENCE_DIR = "reference"
TENSOR_DIRS = (LATENT_DIR, TEXT_DIR, AUDIO_DIR, REFERENCE_DIR)


@dataclass
class ItemRecord:
    """One cached clip (all paths relative to the cache folder)."""

    id: str
    source: str
    source_size: int
    source_mtime_ns: int
    source_sha256: str
    prep: dict[str, Any]
    caption: str
    trigger: str
    frame_rate: float
    vae: str
    text_encoder: str
    latent: str
    latent_shape: list[int]
    latent_bytes: int
    latent_sha256: str
    text: str
    text_shape: list[int]
    text_bytes: int
    text_sha256: str
    audio_vae: str | None = None
    audio: str | None = None
    audio_shape: list[int] | None = None
    audio_bytes: int = 0
    audio_sha256: str = ""
    reference_source: str | None = None
    reference: str | None = None
    reference_shape: list[int] | None = None
    reference_bytes: int = 0
    reference_sha256: str = ""
    reference_key: str = ""

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def has_reference(self) -> bool:
        return self.reference is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ItemRecord:
        try:
            return cls(**data)
        except TypeError as err:
            raise CacheError(f"{where}: damaged item record ({err}); delete the folder and cache again") from None


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of one cache folder."""

    model: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    empty_text: dict[str, Any] | None = None
    items: dict[str, ItemRecord] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    text_source: dict[str, Any] | None = None

    @staticmethod
    def path(folder: Path) -> Path:
        return Path(folder) / MANIFEST_NAME

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        """The folder's manifest, or None where there is none; a foreign or damaged one raises ``CacheError``."""
        path = cls.path(folder)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CacheError(f"{path} is unreadable ({err}); delete the cache folder and cache again") from None
        found = data.get("format") if isinstance(data, dict) else None
        if found != FORMAT:
            raise CacheError(
                f"{path} is not a latent cache of this node pack (format {found!r}); choose another cache folder"
            )
        if data.get("version") != VERSION:
            raise CacheError(
                f"{path} has cache format version {data.get('version')}, this version reads {VERSION}; "
                "cache into a new folder"
            )
        return cls(
            model=data.get("model") or {},
            dataset=data.get("dataset") or {},
            empty_text=data.get("empty_text"),
            items={k: ItemRecord.from_dict(v, f"{path} item {k!r}") for k, v in (data.get("items") or {}).items()},
            failed=data.get("failed") or {},
            text_source=data.get("text_source"),
        )

    def save(self, folder: Path) -> None:
        """Write the manifest atomically (the previous one stays valid until the new one is complete)."""
        data = {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "dataset": self.dataset,
            "empty_text": self.empty_text,
            "items": {k: asdict(self.items[k]) for k in sorted(self.items)},
            "failed": dict(sorted(self.failed.items())),
            "text_source": self.text_source,
        }
        write_atomic(self.path(folder), json.dumps(data, indent=1, ensure_ascii=False))

    def text_files(self, folder: Path, text_id: str) -> dict[str, dict[str, Any]]:
        """Caption -> ``{"file", "shape", "bytes", "sha256"}`` of every caption this manifest holds an intact text
        file of (present, recorded size) made by the text encoder ``text_id``: any item's, or the empty caption's."""
        entries = [(r.caption, r.text_encoder, {"file": r.text, "shape": r.text_shape, "bytes": r.text_bytes,
                                                "sha256": r.text_sha256}) for r in self.items.values()]
        if self.empty_text:
            e = self.empty_text
            entries.append(("", e.get("text_encoder"), {k: e.get(k) for k in ("file", "shape", "bytes", "sha256")}))
        found: dict[str, dict[str, Any]] = {}
        for caption, made_by, record in entries:
            if made_by != text_id or caption in found:
                continue
            path = Path(folder) / record["file"]
            if path.is_file() and path.stat().st_size == record["bytes"]:
                found[caption] = record
        return found

    def referenced_files(self) -> set[str]:
        """Relative paths of every tensor file the manifest points at."""
        files = {r.latent for r in self.items.values()} | {r.text for r in self.items.values()}
        files |= {r.audio for r in self.items.values() if r.audio}
        files |= {r.reference for r in self.items.values() if r.reference}
        if self.empty_text:
            files.add(self.empty_text["file"])
        return files


def check_same_model(manifest: Manifest, model: dict[str, Any], folder: Path) -> None:
    """Refuse to mix models in one folder: another family or text width means another model's cache.

    A different VAE or text encoder of the same family (another checkpoint file) is not an error: its items are
    re-encoded. A different family is, because re-encoding would silently destroy another model's cache.
    """
    old = manifest.model
    for key in ("video_family", "text_family", "text_width"):
        if old.get(key) not in (None, model.get(key)):
            raise CacheError(
                f"cache folder {folder} holds a cache made for another model ({key} {old.get(key)!r}, now "
                f"{model.get(key)!r}); choose another cache folder, or delete this one to re-cache it"
            )


_FAMILY_OF_TEXT = {TEXT_FAMILY_LTX23: "ltx-2.3", TEXT_FAMILY_LTX2: "ltx-2"}
_FAMILY_NAMES = {"ltx-2.3": "LTX-2.3", "ltx-2": "LTX-2"}


def cache_family(model: dict[str, Any]) -> str | None:
    """The model family a cache was made for: recorded by the headless cache, else implied by its Gemma encoder
    (LTX-2.3's dual projection or LTX-2's single one); None when the manifest cannot tell (stand-in, import)."""
    return model.get("model_family") or _FAMILY_OF_TEXT.get(model.get("text_family"))


# What an ltx-trainer import records for the encoders it never saw: no identity to compare against.
IMPORTED = "imported-from-ltx-trainer"


def check_cache_for_model(model: dict[str, Any], folder: Path, family: str, vae: str | None, name: str) -> None:
    """Refuse to train ``name`` (of ``family``, video VAE identity ``vae`` when known) on a cache made for another.

    Latents of another family's VAE or another VAE live in another latent space: training on them gives a LoRA that
    produces garbage without any error, so a mismatch is a ``CacheError`` naming both.
    """
    made_for = cache_family(model)
    if made_for is not None and made_for != family:
        raise CacheError(
            f"cache {folder} was made with an {_FAMILY_NAMES.get(made_for, made_for)} model, but {name} is "
            f"{_FAMILY_NAMES.get(family, family)}: cache the dataset again with this model's VAE and text encoder "
            "(into another folder), or train the model the cache was made for"
        )
    if vae and model.get("vae") not in (None, IMPORTED, vae):
        raise CacheError(
            f"cache {folder} was encoded by another video VAE (identity {model['vae']}) than the one in {name} "
            f"(identity {vae}): its latents do not match this model; cache the dataset again with {name}, or train "
            "the model the cache was made with"
        )
