"""Build or update a cache folder from a prepared dataset, one item at a time.

``build_cache(dataset, folder, video_encoder, text_encoder)`` encodes each clip (latent) and each caption (text
features), plus the empty caption for caption dropout. Re-runs are incremental: an item is re-encoded only if
its source file, preparation, caption or the model that encoded it changed, or its file is missing. Only one
item's frames are in memory at a time. Every file is written atomically and the manifest is updated as items
complete, so a cancelled or crashed run leaves a valid cache of the items done so far and the next run
resumes from there.

``write_cache`` is that loop (folder check, manifest, failures, cleanup), shared with the ltx-trainer import
(``ltx_trainer_import``): each caller passes only how one item's record is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from ..dataset.media import MediaError
from .encoders import CacheError, TextEncoder, VideoEncoder, check_latent
from .manifest import LATENT_DIR, TEXT_DIR, ItemRecord, Manifest, check_same_model
from .store import file_sha256, file_stem, save_tensors, short_digest

logger = logging.getLogger(__name__)

DEFAULT_FRAME_RATE = 25.0  # stills have no rate; ComfyUI's LTX default
_MANIFEST_FLUSH_SECONDS = 2.0

ProgressFn = Callable[[int, int, str], None]  # (done, total, item id); may raise to cancel


class UnreadableItem(Exception):
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


class CacheRun:
    """One pass of the shared loop (``write_cache``) over a cache folder: its manifest, report and cleanup."""

    def __init__(self, folder: Path, manifest: Manifest) -> None:
        self.folder, self.manifest = folder, manifest
        self.report = CacheReport(folder)
        self._flushed = time.monotonic()

    def file_ok(self, rel: str, size: int) -> bool:
        """Whether the cache file ``rel`` exists with the recorded size (else its item is written again)."""
        path = self.folder / rel
        return path.is_file() and path.stat().st_size == size

    def adopt_model(self, model: dict[str, Any]) -> None:
        """Make ``model`` the manifest's; another model family in this folder raises ``CacheError``."""
        old = self.manifest.model
        check_same_model(self.manifest, model, self.folder)
        if old and old.get("vae") != model["vae"]:
            logger.info("cache %s: the VAE changed; every clip will be re-encoded", self.folder)
        if old and old.get("text_encoder") != model["text_encoder"]:
            logger.info("cache %s: the text encoder changed; every caption will be re-encoded", self.folder)
        self.manifest.model = model

    def empty_text(self, text: TextEncoder, text_id: str) -> None:
        """Encode the empty caption (caption dropout) unless the folder has it from this text encoder."""
        old = self.manifest.empty_text
        if old and old.get("text_encoder") == text_id and self.file_ok(old["file"], old["bytes"]):
            return
        self.manifest.empty_text = {**encode_text_file(self.folder, "", text, text_id), "text_encoder": text_id}
        self.report.encoded_texts.append("(empty caption)")

    def keep(self, record: ItemRecord) -> None:
        if record == self.manifest.items.get(record.id):
            self.report.skipped.append(record.id)
        self.manifest.items[record.id] = record
        self.manifest.failed.pop(record.id, None)

    def fail(self, item_id: str, reason: str) -> None:
        self.manifest.items.pop(item_id, None)
        self.manifest.failed[item_id] = reason
        self.report.failed[item_id] = reason
        logger.warning("cache: %s could not be written: %s", item_id, reason)

    def flush(self, force: bool = False) -> None:
        if force or time.monotonic() - self._flushed > _MANIFEST_FLUSH_SECONDS:
            self.manifest.save(self.folder)
            self._flushed = time.monotonic()

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


T = TypeVar("T")
# (run, item id, item, its record from the previous run or None) -> the item's record; raises UnreadableItem
# for an item whose source cannot be read (recorded as failed, the run goes on), anything else to stop the run.
RecordFn = Callable[[CacheRun, str, T, ItemRecord | None], ItemRecord]


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


def write_cache(
    folder: str | Path,
    items: Mapping[str, T],
    record: RecordFn[T],
    *,
    dataset: dict[str, Any],
    model: dict[str, Any] | None = None,
    empty_text: tuple[TextEncoder, str] | None = None,
    failed: Mapping[str, str] | None = None,
    on_progress: ProgressFn | None = None,
) -> CacheReport:
    """The loop every cache writer shares: write ``items`` (id -> item) into ``folder`` through ``record``.

    Refuses a folder holding other files; drops records of ids no longer listed; ``model`` (known up front) or
    ``record`` (through ``run.adopt_model``) sets the manifest's model; ``empty_text`` is ``(encoder, identity)``
    for the empty caption. ``failed`` lists items known to be unusable before the loop. The manifest is saved as
    items complete and whatever happens, so a stopped run leaves a valid cache of the items done; files no record
    points at are deleted at the end. Raises ``CacheError`` when every item failed.
    """
    folder, failed = Path(folder), dict(failed or {})
    start = time.monotonic()
    run = CacheRun(folder, _check_folder(folder) or Manifest())
    if model is not None:
        run.adopt_model(model)
    run.manifest.dataset = dataset
    folder.mkdir(parents=True, exist_ok=True)
    run.remove_unlisted(set(items) | set(failed))
    for item_id, reason in failed.items():
        run.fail(item_id, reason)
    try:
        if empty_text is not None:
            run.empty_text(*empty_text)
        for done, (item_id, item) in enumerate(items.items()):
            if on_progress:
                on_progress(done, len(items), item_id)
            try:
                run.keep(record(run, item_id, item, run.manifest.items.get(item_id)))
            except UnreadableItem as err:
                run.fail(item_id, str(err))
            run.flush()
        if on_progress:
            on_progress(len(items), len(items), "")
    finally:
        run.flush(force=True)
    run.collect_garbage()
    run.report.seconds = time.monotonic() - start
    if run.report.failed and len(run.report.failed) == len(items) + len(failed):
        raise CacheError(f"no item could be written to the cache:\n{run.report.summary()}")
    logger.info("%s", run.report.summary())
    return run.report


class _Encoder:
    """``build_cache``'s ``RecordFn``: encodes what changed with the VAE and the text encoder."""

    def __init__(self, video: VideoEncoder, text: TextEncoder, model: dict[str, Any], trigger: str) -> None:
        self.video, self.text, self.trigger = video, text, trigger
        self.vae_id, self.text_id = model["vae"], model["text_encoder"]
        self.texts: dict[str, dict[str, Any]] = {}  # caption -> text file record made or verified this run

    def text_for(self, run: CacheRun, caption: str, old: ItemRecord | None) -> dict[str, Any]:
        if caption in self.texts:
            return self.texts[caption]
        if (old and old.caption == caption and old.text_encoder == self.text_id
                and run.file_ok(old.text, old.text_bytes)):
            rec = {"file": old.text, "shape": old.text_shape, "bytes": old.text_bytes, "sha256": old.text_sha256}
        else:
            rec = encode_text_file(run.folder, caption, self.text, self.text_id)
            run.report.encoded_texts.append(caption)
        self.texts[caption] = rec
        return rec

    def __call__(self, run: CacheRun, item_id: str, item: CacheItem, old: ItemRecord | None) -> ItemRecord:
        try:
            source_sha = _source_hash(item, old)
        except OSError as err:
            raise UnreadableItem(f"cannot read the source file {item.source}: {err.strerror or err}") from err
        prep = item.plan.as_dict()
        latent_ok = (
            old is not None and old.vae == self.vae_id and old.source_sha256 == source_sha and old.prep == prep
            and run.file_ok(old.latent, old.latent_bytes)
        )
        if latent_ok:
            latent = {"file": old.latent, "shape": old.latent_shape, "bytes": old.latent_bytes,
                      "sha256": old.latent_sha256}
        else:
            latent = self._encode_latent(run, item, source_sha, prep)
        text = self.text_for(run, item.caption, old)
        return ItemRecord(
            id=item_id, source=str(item.source), source_size=item.source_size,
            source_mtime_ns=item.source_mtime_ns, source_sha256=source_sha, prep=prep, caption=item.caption,
            trigger=self.trigger, frame_rate=float(item.fps or DEFAULT_FRAME_RATE), vae=self.vae_id,
            text_encoder=self.text_id, latent=latent["file"], latent_shape=latent["shape"],
            latent_bytes=latent["bytes"], latent_sha256=latent["sha256"], text=text["file"],
            text_shape=text["shape"], text_bytes=text["bytes"], text_sha256=text["sha256"],
        )

    def _encode_latent(self, run: CacheRun, item: CacheItem, source_sha: str, prep: dict[str, Any]) -> dict[str, Any]:
        try:
            frames = item.load_frames()
        except MediaError as err:
            raise UnreadableItem(str(err)) from err
        latent = self.video.encode(frames)
        check_latent(latent, frames, f"{item.id}")
        del frames
        # The name depends on everything the latent is made of, so a record never points at a newer file.
        key = short_digest(item.id, source_sha, repr(sorted(prep.items())), self.vae_id)
        rel = f"{LATENT_DIR}/{file_stem(item.id)}-{key}.safetensors"
        info = save_tensors(run.folder / rel, {"video": latent}, {"id": item.id})
        run.report.encoded_latents.append(item.id)
        return {"file": rel, "shape": list(latent.shape), **info}


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
    model = model_record(video, text)
    return write_cache(
        folder, {item.id: item for item in items}, _Encoder(video, text, model, trigger),
        dataset={"trigger": trigger, **(dataset_info or {})}, model=model, empty_text=(text, model["text_encoder"]),
        on_progress=on_progress,
    )
