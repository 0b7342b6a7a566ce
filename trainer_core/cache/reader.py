"""``CachedData``: a cache folder as the engine's ``TrainingData``, one item read per ``__getitem__``.

Opening checks the manifest and that every file it lists is present with the recorded size, so a missing or
truncated file is reported before training starts, not at step 3,000. Items are read with safetensors'
memory-mapped reader; nothing but the manifest and the empty caption stays in memory. A clip's audio latent,
when the cache holds one, comes back as ``Sample.audio``; ``shape_of`` includes its shape, so the engine's
batching never puts clips with and without audio (or with audio of another length) into one batch. A clip's
reference latent (IC-LoRA) comes back as ``Sample.reference`` and joins ``shape_of`` the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from ..engine.data import Sample, batch_shape
from .encoders import CacheError
from .manifest import ItemRecord, Manifest
from .store import file_sha256, load_tensors

logger = logging.getLogger(__name__)


class CachedData:
    """The cached clips of ``folder`` (implements ``trainer_core.engine.data.TrainingData``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = Manifest.load(self.folder)
        if manifest is None:
            raise CacheError(
                f"{self.folder} is not a latent cache (no manifest.json); run Cache LTX Training Latents "
                "(or `python -m trainer_core cache`) into it first"
            )
        self.manifest = manifest
        self.records: list[ItemRecord] = [manifest.items[k] for k in sorted(manifest.items)]
        if not self.records:
            raise CacheError(f"cache {self.folder} has no items; check the dataset and run the cache step again")
        self._check_files()
        self.trigger: str = manifest.dataset.get("trigger", "")
        self.reference_downscale_factor: int = int(manifest.dataset.get("reference_downscale_factor") or 1)
        self.reference_temporal_scale_factor: int = int(
            manifest.dataset.get("reference_temporal_scale_factor") or _temporal_factor(self.records, self.folder)
        )
        self.fingerprint: str = self._fingerprint()
        self._empty_text: torch.Tensor | None = None

    @property
    def model(self) -> dict:
        """Families, text width and identities of the VAE, text encoder and audio VAE that made the cache."""
        return self.manifest.model

    @property
    def text_width(self) -> int:
        return int(self.manifest.model.get("text_width") or self.records[0].text_shape[-1])

    @property
    def has_empty_text(self) -> bool:
        """Whether the cache holds the empty caption's features (an ltx-trainer import may not)."""
        return bool(self.manifest.empty_text)

    @property
    def empty_text(self) -> torch.Tensor:
        """The empty caption's features ``[1, T, D]`` (caption dropout)."""
        if self._empty_text is None:
            info = self.manifest.empty_text
            if not info:
                raise CacheError(
                    f"cache {self.folder} has no empty-caption features (imported from ltx-trainer without a text "
                    "encoder); set caption dropout to 0, or run the cache step with a text encoder"
                )
            self._empty_text = load_tensors(self.folder / info["file"], ("text",))["text"]
        return self._empty_text

    def _check_files(self) -> None:
        bad = []
        entries = [(r.latent, r.latent_bytes) for r in self.records] + [(r.text, r.text_bytes) for r in self.records]
        entries += [(r.audio, r.audio_bytes) for r in self.records if r.audio]
        entries += [(r.reference, r.reference_bytes) for r in self.records if r.reference]
        if self.manifest.empty_text:
            entries.append((self.manifest.empty_text["file"], self.manifest.empty_text["bytes"]))
        for rel, size in dict(entries).items():
            path = self.folder / rel
            if not path.is_file():
                bad.append(f"{rel} (missing)")
            elif path.stat().st_size != size:
                bad.append(f"{rel} ({path.stat().st_size} bytes, expected {size})")
        if bad:
            shown = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
            raise CacheError(
                f"cache {self.folder}: {len(bad)} file(s) missing or damaged:\n  {shown}\n"
                "Run the cache step again on this folder: it re-encodes exactly those items."
            )

    def _fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps(self.manifest.model, sort_keys=True).encode())
        for r in self.records:
            h.update(f"{r.id}\0{r.latent_sha256}\0{r.text_sha256}\0{r.frame_rate}\0".encode())
            if r.audio:  # caches without audio keep the fingerprint they had before audio existed
                h.update(f"audio\0{r.audio_sha256}\0".encode())
            if r.reference:
                h.update(f"reference\0{r.reference_sha256}\0".encode())
        return h.hexdigest()[:16]

    def verify(self) -> list[str]:
        """Re-hash every file against the manifest; return the damaged ones (empty list: all good)."""
        bad = []
        for r in self.records:
            files = [(r.latent, r.latent_sha256), (r.text, r.text_sha256)]
            files += [(r.audio, r.audio_sha256)] if r.audio else []
            files += [(r.reference, r.reference_sha256)] if r.reference else []
            for rel, digest in files:
                if file_sha256(self.folder / rel) != digest:
                    bad.append(rel)
        return sorted(set(bad))

    def __len__(self) -> int:
        return len(self.records)

    def shape_of(self, index: int) -> tuple[int, ...]:
        """Video latent shape, then the audio and reference latents' when the clip has them (as ``InMemoryData``)."""
        r = self.records[index]
        return batch_shape(r.latent_shape, r.audio_shape, r.reference_shape)

    def frame_rate_of(self, index: int) -> float:
        return self.records[index].frame_rate

    def audio_count(self) -> int:
        """How many items have an audio latent (records written before audio existed have none)."""
        return sum(bool(getattr(r, "has_audio", False)) for r in self.records)

    def reference_count(self) -> int:
        """How many items have a reference latent (IC-LoRA)."""
        return sum(r.has_reference for r in self.records)

    def index_of(self, item_id: str) -> int:
        """Position of the item with id ``item_id`` (raises ``CacheError`` naming the known ids)."""
        for i, r in enumerate(self.records):
            if r.id == item_id:
                return i
        known = ", ".join(r.id for r in self.records[:8])
        raise CacheError(f"cache {self.folder} has no item {item_id!r} (items: {known}, ...)")

    def _tensor(self, rel: str, key: str, shape: list[int], what: str) -> torch.Tensor:
        """One cached tensor, refused unless it has the manifest's shape (the file changed after caching)."""
        tensor = load_tensors(self.folder / rel, (key,))[key]
        if list(tensor.shape) != shape:
            raise CacheError(f"cache {self.folder}: {rel} has shape {list(tensor.shape)}, not the manifest's {what} "
                             f"shape {shape}; run the cache step again")
        return tensor

    def __getitem__(self, index: int) -> Sample:
        r = self.records[index]
        video = self._tensor(r.latent, "video", r.latent_shape, "latent")
        text = self._tensor(r.text, "text", r.text_shape, "text")
        audio = self._tensor(r.audio, "audio", r.audio_shape, "audio") if r.audio else None
        reference = self._tensor(r.reference, "video", r.reference_shape, "reference") if r.reference else None
        return Sample(key=r.id, video=video, text=text, frame_rate=r.frame_rate, audio=audio, caption=r.caption,
                      reference=reference)

    def __repr__(self) -> str:
        return f"CachedData({str(self.folder)!r}, {len(self)} items, fingerprint {self.fingerprint})"


def _temporal_factor(records: list[ItemRecord], folder: Path) -> int:
    """The reference_temporal_scale_factor of a cache that did not record one, from its first reference's latent
    frame count, as ltx-trainer infers it ((F' - 1) / (f' - 1), checked as the import checks it); 1 without a
    reference."""
    from .ltx_trainer_import import reference_factors  # the import's rule; imported here, it imports the writer

    for r in records:
        if r.reference_shape is not None:
            return reference_factors(r.latent_shape, r.reference_shape, f"cache {folder}, item {r.id} ({r.source})")[1]
    return 1
