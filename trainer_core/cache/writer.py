"""Build or update a cache folder from a prepared dataset, one item at a time.

``build_cache(dataset, folder, video_encoder, text_encoder)`` encodes each clip (latent) and each caption (text
features), plus the empty caption for caption dropout. Re-runs are incremental: an item is re-encoded only if
its source file, preparation, caption or the model that encoded it changed, or its file is missing. Only one
item's frames are in memory at a time. Every file is written atomically and the manifest is updated as items
complete, so a cancelled or crashed run leaves a valid cache of the items done so far and the next run
resumes from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..dataset.media import MediaError
from .encoders import CacheError, TextEncoder, VideoEncoder, check_latent
from .manifest import LATENT_DIR, TEXT_DIR, ItemRecord, Manifest, check_same_model
from .store import file_sha256, file_stem, save_tensors, short_digest

logger = logging.getLogger(__name__)

DEFAULT_FRAME_RATE = 25.0  # stills have no rate; ComfyUI's LTX default
_MANIFEST_FLUSH_SECONDS = 2.0

ProgressFn = Callable[[int, int, str], None]  # (done, total, item id); may raise to cancel


class _Unreadable(Exception):
    """One item's source cannot be read or decoded: the item is recorded as failed, the run goes on."""


class CacheItem(Protocol):
    """What the cache reads from a dataset item (``trainer_core.dataset.PreparedItem`` provides it)."""

    id: str
    source: Path
    source_size: int
    source_mtime_ns: int
    caption: str

    @property
    def fps(self) -> float | None: ...

    @property
    def plan(self) -> Any: ...  # has as_dict()

    def load_frames(self) -> torch.Tensor: ...


@dataclass
class CacheReport:
    """What one run did: counts per outcome and the failures (id -> reason)."""

    folder: Path
    encoded_latents: list[str] = field(default_factory=list)
    encoded_texts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"cache {self.folder}: {len(self.encoded_latents)} clips encoded, {len(self.encoded_texts)} captions "
            f"encoded, {len(self.skipped)} unchanged, {len(self.removed)} removed, {len(self.failed)} failed "
            f"({self.seconds:.1f} s)"
        ]
        lines += [f"  failed {k}: {v}" for k, v in self.failed.items()]
        return "\n".join(lines)


def model_record(video: VideoEncoder, text: TextEncoder) -> dict[str, Any]:
    """The manifest's ``model`` section for these encoders."""
    return {
        "video_family": video.family,
        "text_family": text.family,
        "text_width": text.width,
        "vae": video.identity(),
        "text_encoder": text.identity(),
    }


def _source_hash(item: CacheItem, old: ItemRecord | None) -> str:
    """The source's sha256, re-read only when its size or mtime changed since the last run."""
    if old and (old.source_size, old.source_mtime_ns) == (item.source_size, item.source_mtime_ns):
        return old.source_sha256
    return file_sha256(Path(item.source))


def _file_ok(folder: Path, rel: str, size: int) -> bool:
    path = folder / rel
    return path.is_file() and path.stat().st_size == size


def _check_text(emb: torch.Tensor, text: TextEncoder, where: str) -> None:
    if emb.ndim != 3 or emb.shape[0] != 1 or emb.shape[2] != text.width:
        raise CacheError(f"{where}: the text encoder returned shape {tuple(emb.shape)}, expected [1, T, {text.width}]")
    if not torch.isfinite(emb).all():
        raise CacheError(f"{where}: the text encoder returned non-finite values (NaN/inf)")


def encode_text_file(folder: Path, caption: str, text: TextEncoder, text_id: str) -> dict[str, Any]:
    """Encode ``caption`` into ``text/<hash>.safetensors`` (shared by identical captions); return its record."""
    rel = f"{TEXT_DIR}/{short_digest(text_id, caption)}.safetensors"
    emb = text.encode(caption)
    _check_text(emb, text, f"caption {caption[:60]!r}")
    info = save_tensors(folder / rel, {"text": emb}, {"caption": caption, "text_encoder": text_id})
    return {"file": rel, "shape": list(emb.shape), **info}


class _Run:
    """State of one ``build_cache`` call (kept small so each step is a short method)."""

    def __init__(self, folder: Path, manifest: Manifest, video: VideoEncoder, text: TextEncoder, trigger: str):
        self.folder, self.manifest, self.video, self.text, self.trigger = folder, manifest, video, text, trigger
        self.vae_id, self.text_id = manifest.model["vae"], manifest.model["text_encoder"]
        self.report = CacheReport(folder)
        self.texts: dict[str, dict[str, Any]] = {}  # caption -> text file record made or verified this run
        self._flushed = time.monotonic()

    def flush(self, force: bool = False) -> None:
        if force or time.monotonic() - self._flushed > _MANIFEST_FLUSH_SECONDS:
            self.manifest.save(self.folder)
            self._flushed = time.monotonic()

    def empty_text(self) -> None:
        old = self.manifest.empty_text
        if old and old.get("text_encoder") == self.text_id and _file_ok(self.folder, old["file"], old["bytes"]):
            return
        self.manifest.empty_text = {**encode_text_file(self.folder, "", self.text, self.text_id),
                                    "text_encoder": self.text_id}
        self.report.encoded_texts.append("(empty caption)")

    def text_for(self, caption: str, old: ItemRecord | None) -> dict[str, Any]:
        if caption in self.texts:
            return self.texts[caption]
        if (old and old.caption == caption and old.text_encoder == self.text_id
                and _file_ok(self.folder, old.text, old.text_bytes)):
            rec = {"file": old.text, "shape": old.text_shape, "bytes": old.text_bytes, "sha256": old.text_sha256}
        else:
            rec = encode_text_file(self.folder, caption, self.text, self.text_id)
            self.report.encoded_texts.append(caption)
        self.texts[caption] = rec
        return rec

    def item(self, item: CacheItem) -> None:
        old = self.manifest.items.get(item.id)
        try:
            source_sha = _source_hash(item, old)
        except OSError as err:
            raise _Unreadable(f"cannot read the source file {item.source}: {err.strerror or err}") from err
        prep = item.plan.as_dict()
        latent_ok = (
            old is not None and old.vae == self.vae_id and old.source_sha256 == source_sha and old.prep == prep
            and _file_ok(self.folder, old.latent, old.latent_bytes)
        )
        if latent_ok:
            latent = {"file": old.latent, "shape": old.latent_shape, "bytes": old.latent_bytes,
                      "sha256": old.latent_sha256}
        else:
            latent = self._encode_latent(item, source_sha, prep)
        text = self.text_for(item.caption, old)
        rec = ItemRecord(
            id=item.id, source=str(item.source), source_size=item.source_size,
            source_mtime_ns=item.source_mtime_ns, source_sha256=source_sha, prep=prep, caption=item.caption,
            trigger=self.trigger, frame_rate=float(item.fps or DEFAULT_FRAME_RATE), vae=self.vae_id,
            text_encoder=self.text_id, latent=latent["file"], latent_shape=latent["shape"],
            latent_bytes=latent["bytes"], latent_sha256=latent["sha256"], text=text["file"],
            text_shape=text["shape"], text_bytes=text["bytes"], text_sha256=text["sha256"],
        )
        if rec == old:
            self.report.skipped.append(item.id)
        self.manifest.items[item.id] = rec
        self.manifest.failed.pop(item.id, None)

    def _encode_latent(self, item: CacheItem, source_sha: str, prep: dict[str, Any]) -> dict[str, Any]:
        try:
            frames = item.load_frames()
        except MediaError as err:
            raise _Unreadable(str(err)) from err
        latent = self.video.encode(frames)
        check_latent(latent, frames, f"{item.id}")
        del frames
        # The name depends on everything the latent is made of, so a record never points at a newer file.
        key = short_digest(item.id, source_sha, repr(sorted(prep.items())), self.vae_id)
        rel = f"{LATENT_DIR}/{file_stem(item.id)}-{key}.safetensors"
        info = save_tensors(self.folder / rel, {"video": latent}, {"id": item.id})
        self.report.encoded_latents.append(item.id)
        return {"file": rel, "shape": list(latent.shape), **info}

    def remove_unlisted(self, ids: set[str]) -> None:
        for key in sorted(set(self.manifest.items) - ids):
            del self.manifest.items[key]
            self.report.removed.append(key)
        for key in sorted(set(self.manifest.failed) - ids):
            del self.manifest.failed[key]

    def collect_garbage(self) -> None:
        """Delete tensor files no record points at (old versions, temp files of interrupted writes)."""
        keep = self.manifest.referenced_files()
        for sub in (LATENT_DIR, TEXT_DIR):
            for path in sorted((self.folder / sub).glob("*")):
                rel = f"{sub}/{path.name}"
                if path.is_file() and rel not in keep:
                    path.unlink()


def _check_folder(folder: Path) -> Manifest | None:
    if folder.exists() and not folder.is_dir():
        raise CacheError(f"cache folder {folder} is a file; choose a folder")
    manifest = Manifest.load(folder)
    if manifest is None and folder.is_dir() and any(p.name != LATENT_DIR and p.name != TEXT_DIR
                                                    for p in folder.iterdir()):
        raise CacheError(
            f"cache folder {folder} already holds other files and no {Manifest.path(folder).name}; choose an empty "
            "or new folder so nothing of yours is overwritten"
        )
    return manifest


def build_cache(
    items: Sequence[CacheItem],
    folder: str | Path,
    video: VideoEncoder,
    text: TextEncoder,
    *,
    trigger: str = "",
    dataset_info: dict[str, Any] | None = None,
    on_progress: ProgressFn | None = None,
) -> CacheReport:
    """Encode ``items`` into ``folder`` (created if needed); return what was done.

    An item whose frames cannot be decoded is recorded under ``failed`` and left out (never half-written);
    model errors and cancellation (any exception from ``on_progress``) stop the run after saving the manifest
    of the items already done.
    """
    folder = Path(folder)
    start = time.monotonic()
    manifest = _check_folder(folder) or Manifest()
    model = model_record(video, text)
    check_same_model(manifest, model, folder)
    if manifest.model and manifest.model.get("vae") != model["vae"]:
        logger.info("cache %s: the VAE changed; every clip will be re-encoded", folder)
    if manifest.model and manifest.model.get("text_encoder") != model["text_encoder"]:
        logger.info("cache %s: the text encoder changed; every caption will be re-encoded", folder)
    manifest.model = model
    manifest.dataset = {"trigger": trigger, **(dataset_info or {})}
    folder.mkdir(parents=True, exist_ok=True)
    run = _Run(folder, manifest, video, text, trigger)
    run.remove_unlisted({i.id for i in items})
    try:
        run.empty_text()
        for done, item in enumerate(items):
            if on_progress:
                on_progress(done, len(items), item.id)
            try:
                run.item(item)
            except _Unreadable as err:
                manifest.items.pop(item.id, None)
                manifest.failed[item.id] = str(err)
                run.report.failed[item.id] = str(err)
                logger.warning("cache: %s could not be encoded: %s", item.id, err)
            run.flush()
        if on_progress:
            on_progress(len(items), len(items), "")
    finally:
        run.flush(force=True)
    run.collect_garbage()
    run.report.seconds = time.monotonic() - start
    if items and len(run.report.failed) == len(items):
        raise CacheError(f"no item of the dataset could be encoded:\n{run.report.summary()}")
    logger.info("%s", run.report.summary())
    return run.report
