"""Build or update a cache folder from a prepared dataset, one item at a time.

``build_cache(dataset, folder, video_encoder, text_encoder, audio=audio_encoder)`` encodes each clip (latent),
the audio of exactly its kept frames' window (audio latent; when an audio encoder is given and audio is not
skipped) and each caption (text features), plus the empty caption for caption dropout. Re-runs are incremental:
a latent is re-encoded only if its source file, preparation, caption or the model that encoded it changed, or its
file is missing; video and audio are decided separately, so turning audio on or off never re-encodes video. A
caption is encoded once per text encoder: an intact text file of it from that encoder (any item's) is reused. An
IC-LoRA reference video is encoded by the same VAE into ``reference/`` and decided separately too. Only one
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

from ..atomic import sweep_stale_temps
from ..dataset.media import AudioClip, MediaError
from .encoders import (
    AUDIO_FAMILY,
    AudioEncoder,
    CacheError,
    TextEncoder,
    VideoEncoder,
    check_audio_latent,
    check_latent,
)
from .manifest import (
    AUDIO_DIR,
    LATENT_DIR,
    MANIFEST_NAME,
    REFERENCE_DIR,
    TENSOR_DIRS,
    TEXT_DIR,
    ItemRecord,
    Manifest,
    check_same_model,
)
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

    def load_audio(self) -> AudioClip | None:
        """The audio of exactly the kept frames' window ``[start, start + F/fps)``, 16 kHz stereo; None for a
        still or a file without an audio track."""
        ...

    reference: Path | None  # IC-LoRA reference video, None for none
    reference_rel: str | None

    @property
    def reference_key(self) -> str | None:
        """Changes whenever the reference file or its cut does; None without a reference."""
        ...

    def load_reference_frames(self) -> torch.Tensor: ...


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
    encoded_audio: list[str] = field(default_factory=list)
    with_audio: list[str] = field(default_factory=list)  # every cached item, not only this run's
    without_audio: list[str] = field(default_factory=list)
    stills: int = 0  # of without_audio
    no_audio_reason: str | None = None  # why the cache holds no audio at all (None: audio was asked for)
    encoded_references: list[str] = field(default_factory=list)
    with_reference: int = 0  # every cached item, not only this run's

    def count_audio(self, manifest: Manifest, no_audio_reason: str | None) -> None:
        """Count the cached items with and without an audio latent (the summary's audio line)."""
        self.no_audio_reason = no_audio_reason
        self.with_audio = sorted(k for k, r in manifest.items.items() if r.has_audio)
        self.without_audio = sorted(k for k, r in manifest.items.items() if not r.has_audio)
        self.stills = sum(1 for k in self.without_audio if manifest.items[k].latent_shape[1] == 1)

    def audio_summary(self) -> str:
        if self.no_audio_reason:
            return f"no audio: {self.no_audio_reason}"
        stills = f" ({self.stills} of them stills)" if self.stills else ""
        return (f"{len(self.with_audio)} clips with audio, {len(self.without_audio)} without an audio track{stills}"
                f"; {len(self.encoded_audio)} audio tracks encoded")

    def summary(self) -> str:
        lines = [
            f"cache {self.folder}: {len(self.encoded_latents)} clips encoded, {len(self.encoded_texts)} captions "
            f"encoded, {len(self.skipped)} unchanged, {len(self.removed)} removed, {len(self.failed)} failed "
            f"({self.seconds:.1f} s)",
            f"  {self.audio_summary()}",
        ]
        if self.with_reference:
            lines.append(f"  {self.with_reference} clips with a reference video (IC-LoRA); "
                         f"{len(self.encoded_references)} references encoded")
        lines += [f"  failed {k}: {v}" for k, v in self.failed.items()]
        return "\n".join(lines)


def model_record(
    video: VideoEncoder, text: TextEncoder, audio: AudioEncoder | None = None, model_family: str | None = None
) -> dict[str, Any]:
    """The manifest's ``model`` section for these encoders (``audio_vae`` None: no audio encoded; ``model_family``
    when the caller knows the model, e.g. the headless cache from its checkpoint; training checks it)."""
    if audio is not None and audio.family != AUDIO_FAMILY:
        raise CacheError(f"the audio encoder is a {audio.family!r}, expected LTX-2.x's audio VAE ({AUDIO_FAMILY})")
    return {
        "video_family": video.family,
        "text_family": text.family,
        "text_width": text.width,
        "vae": video.identity(),
        "text_encoder": text.identity(),
        "audio_vae": None if audio is None else audio.identity(),
        **({"model_family": model_family} if model_family else {}),
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
        # The text files of the previous run, read before unlisted items are dropped: a caption that moved to
        # another item, or an item's caption that another item had, is still found (and not encoded again).
        self._previous = Manifest(items=dict(manifest.items), empty_text=manifest.empty_text)
        self._texts: dict[str, dict[str, dict[str, Any]]] = {}  # text encoder identity -> caption -> record

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
        if old and old.get("audio_vae") != model.get("audio_vae"):
            change = ("audio is off now: the audio latents are dropped, the video latents kept"
                      if not model.get("audio_vae") else "the audio VAE changed (or audio is on now): every clip's "
                      "audio will be encoded, the video latents kept")
            logger.info("cache %s: %s", self.folder, change)
        self.manifest.model = model

    def text_file(self, caption: str, text: TextEncoder, text_id: str) -> dict[str, Any]:
        """``caption``'s text file record: made earlier by the text encoder ``text_id`` (for any item, or as the
        empty caption) and intact, or encoded now; each caption is encoded at most once per run."""
        if text_id not in self._texts:
            self._texts[text_id] = self._previous.text_files(self.folder, text_id)
        made = self._texts[text_id]
        if caption not in made:
            made[caption] = encode_text_file(self.folder, caption, text, text_id)
            self.report.encoded_texts.append(caption or "(empty caption)")
        return made[caption]

    def empty_text(self, text: TextEncoder, text_id: str) -> None:
        """The empty caption (caption dropout), encoded unless the folder has it from this text encoder."""
        self.manifest.empty_text = {**self.text_file("", text, text_id), "text_encoder": text_id}

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
        for sub in TENSOR_DIRS:
            for path in sorted((self.folder / sub).glob("*")):
                rel = f"{sub}/{path.name}"
                if path.is_file() and rel not in keep:
                    path.unlink()


T = TypeVar("T")
# (run, item id, item, its record from the previous run or None) -> the item's record; raises UnreadableItem
# for an item whose source cannot be read (recorded as failed, the run goes on), anything else to stop the run.
RecordFn = Callable[[CacheRun, str, T, ItemRecord | None], ItemRecord]


def check_folder(folder: Path) -> Manifest | None:
    """The cache folder's manifest (None where there is none yet); ``CacheError`` for a file, or a manifest that is
    damaged or not this pack's. Reads only the manifest, so a node checks this before its graph runs."""
    if folder.exists() and not folder.is_dir():
        raise CacheError(f"cache folder {folder} is a file; choose a folder")
    return Manifest.load(folder)


def _check_folder(folder: Path) -> Manifest | None:
    manifest = check_folder(folder)
    # A run killed while saving the manifest leaves its temp file; the tensor folders' are collected at the end.
    for stale in sweep_stale_temps(folder, MANIFEST_NAME):
        logger.info("cache %s: removed %s, left by an interrupted run", folder, stale.name)
    if manifest is None and folder.is_dir() and any(p.name not in TENSOR_DIRS for p in folder.iterdir()):
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
    no_audio_reason: str | None = None,
    on_progress: ProgressFn | None = None,
    text_source: dict[str, Any] | None = None,
) -> CacheReport:
    """The loop every cache writer shares: write ``items`` (id -> item) into ``folder`` through ``record``.

    Refuses a folder holding other files; drops records of ids no longer listed; ``model`` (known up front) or
    ``record`` (through ``run.adopt_model``) sets the manifest's model; ``empty_text`` is ``(encoder, identity)``
    for the empty caption. ``failed`` lists items known to be unusable before the loop. ``no_audio_reason``
    says why the run stores no audio at all (None: audio was asked for; the summary counts it). ``text_source``
    (``text_reuse.text_source``) ties the text encoder's files to its identity in the manifest; None keeps the one
    recorded. The manifest is saved as
    items complete and whatever happens, so a stopped run leaves a valid cache of the items done; files no record
    points at are deleted at the end. Raises ``CacheError`` when every item failed.
    """
    folder, failed = Path(folder), dict(failed or {})
    start = time.monotonic()
    run = CacheRun(folder, _check_folder(folder) or Manifest())
    if model is not None:
        run.adopt_model(model)
    if text_source is not None:
        run.manifest.text_source = text_source
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
    run.report.count_audio(run.manifest, no_audio_reason)
    run.report.with_reference = sum(r.has_reference for r in run.manifest.items.values())
    run.report.seconds = time.monotonic() - start
    if run.report.failed and len(run.report.failed) == len(items) + len(failed):
        raise CacheError(f"no item could be written to the cache:\n{run.report.summary()}")
    logger.info("%s", run.report.summary())
    return run.report


NO_AUDIO: dict[str, Any] = {"audio": None, "audio_shape": None, "audio_bytes": 0, "audio_sha256": ""}


def audio_fields(record: ItemRecord) -> dict[str, Any]:
    """A record's audio latent entry, as ``ItemRecord`` keyword arguments."""
    return {"audio": record.audio, "audio_shape": record.audio_shape, "audio_bytes": record.audio_bytes,
            "audio_sha256": record.audio_sha256}


REFERENCE_FIELDS = ("reference_source", "reference", "reference_shape", "reference_bytes", "reference_sha256",
                    "reference_key")
NO_REFERENCE: dict[str, Any] = {"reference_source": None, "reference": None, "reference_shape": None,
                                "reference_bytes": 0, "reference_sha256": "", "reference_key": ""}


def reference_fields(record: ItemRecord) -> dict[str, Any]:
    """A record's reference latent entry, as ``ItemRecord`` keyword arguments."""
    return {name: getattr(record, name) for name in REFERENCE_FIELDS}


class _Encoder:
    """``build_cache``'s ``RecordFn``: encodes what changed with the VAE, the audio VAE and the text encoder."""

    def __init__(self, video: VideoEncoder, text: TextEncoder, audio: AudioEncoder | None, model: dict[str, Any],
                 trigger: str) -> None:
        self.video, self.text, self.audio, self.trigger = video, text, audio, trigger
        self.vae_id, self.text_id, self.audio_id = model["vae"], model["text_encoder"], model["audio_vae"]

    def __call__(self, run: CacheRun, item_id: str, item: CacheItem, old: ItemRecord | None) -> ItemRecord:
        try:
            source_sha = _source_hash(item, old)
        except OSError as err:
            raise UnreadableItem(f"cannot read the source file {item.source}: {err.strerror or err}") from err
        prep = item.plan.as_dict()
        same_source = old is not None and old.source_sha256 == source_sha and old.prep == prep
        if same_source and old.vae == self.vae_id and run.file_ok(old.latent, old.latent_bytes):
            latent = {"file": old.latent, "shape": old.latent_shape, "bytes": old.latent_bytes,
                      "sha256": old.latent_sha256}
        else:
            latent = self._encode_latent(run, item, source_sha, prep)
        if self.audio is None:
            audio = NO_AUDIO
        elif same_source and old.audio_vae == self.audio_id and (
                old.audio is None or run.file_ok(old.audio, old.audio_bytes)):
            audio = audio_fields(old)  # also "no audio track", decided from this very source
        else:
            audio = self._encode_audio(run, item, source_sha, prep)
        reference = self._reference(run, item, old)
        text = run.text_file(item.caption, self.text, self.text_id)
        return ItemRecord(
            id=item_id, source=str(item.source), source_size=item.source_size,
            source_mtime_ns=item.source_mtime_ns, source_sha256=source_sha, prep=prep, caption=item.caption,
            trigger=self.trigger, frame_rate=float(item.fps or DEFAULT_FRAME_RATE), vae=self.vae_id,
            text_encoder=self.text_id, latent=latent["file"], latent_shape=latent["shape"],
            latent_bytes=latent["bytes"], latent_sha256=latent["sha256"], text=text["file"],
            text_shape=text["shape"], text_bytes=text["bytes"], text_sha256=text["sha256"],
            audio_vae=self.audio_id, **audio, **reference,
        )

    def _reference(self, run: CacheRun, item: CacheItem, old: ItemRecord | None) -> dict[str, Any]:
        """The reference latent's record fields: kept when the reference, its cut and the VAE are unchanged."""
        if item.reference_key is None:
            return NO_REFERENCE
        key = short_digest(item.reference_key, self.vae_id)
        if old and old.reference and old.reference_key == key and run.file_ok(old.reference, old.reference_bytes):
            return reference_fields(old)
        try:
            frames = item.load_reference_frames()
        except MediaError as err:
            raise UnreadableItem(f"{item.id}: reference video {item.reference_rel} cannot be decoded ({err}); "
                                 "fix or replace it") from err
        latent = self.video.encode(frames)
        check_latent(latent, frames, f"{item.id} (reference video {item.reference_rel})")
        rel = f"{REFERENCE_DIR}/{file_stem(item.id)}-{key}.safetensors"
        info = save_tensors(run.folder / rel, {"video": latent}, {"id": item.id})
        run.report.encoded_references.append(item.id)
        return {"reference_source": str(item.reference), "reference": rel, "reference_shape": list(latent.shape),
                "reference_bytes": info["bytes"], "reference_sha256": info["sha256"], "reference_key": key}

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

    def _encode_audio(self, run: CacheRun, item: CacheItem, source_sha: str, prep: dict[str, Any]) -> dict[str, Any]:
        """The audio of the kept frames' window, encoded; ``NO_AUDIO`` for a still or a file without audio."""
        try:
            clip = item.load_audio()
        except MediaError as err:
            raise UnreadableItem(str(err)) from err
        if clip is None:
            return NO_AUDIO
        waveform = torch.from_numpy(clip.waveform)
        samples = waveform.shape[-1]
        latent = self.audio.encode(waveform)
        check_audio_latent(latent, samples, f"{item.id} (audio)")
        key = short_digest(item.id, source_sha, repr(sorted(prep.items())), self.audio_id)
        rel = f"{AUDIO_DIR}/{file_stem(item.id)}-{key}.safetensors"
        # One metadata key: safetensors writes several in a random order, and equal latents should give equal files.
        info = save_tensors(run.folder / rel, {"audio": latent}, {"id": item.id})
        run.report.encoded_audio.append(item.id)
        return {"audio": rel, "audio_shape": list(latent.shape), "audio_bytes": info["bytes"],
                "audio_sha256": info["sha256"]}


def build_cache(
    items: Sequence[CacheItem],
    folder: str | Path,
    video: VideoEncoder,
    text: TextEncoder,
    *,
    audio: AudioEncoder | None = None,
    skip_audio: bool = False,
    trigger: str = "",
    reference_downscale_factor: int = 1,
    dataset_info: dict[str, Any] | None = None,
    on_progress: ProgressFn | None = None,
    model_family: str | None = None,
    text_source: dict[str, Any] | None = None,
) -> CacheReport:
    """Encode ``items`` into ``folder`` (created if needed); return what was done.

    ``model_family``: the family of the model whose VAE encodes (recorded; training on another family is refused).
    ``text_source``: the headless text encoder's files and identity (``text_reuse.text_source``), recorded so the
    next run knows which captions are cached without loading the text encoder.

    ``audio``: the audio VAE encoding each clip's audio track (None, or ``skip_audio``: the cache holds no audio,
    and audio latents of an earlier run are dropped; the video latents are kept either way).
    ``reference_downscale_factor``: the dataset's (recorded in the manifest; the items' references are already cut
    at that size). An item whose frames, reference or audio cannot be decoded is recorded under ``failed`` and left
    out (never half-written); model errors and cancellation (any exception from ``on_progress``) stop the run after
    saving the manifest of the items done.
    """
    if skip_audio:
        audio, reason = None, "skip_audio is set"
    elif audio is None:
        reason = "no audio VAE given (connect Load LTXV Audio VAE, or use a checkpoint with an audio VAE)"
    else:
        reason = None
    model = model_record(video, text, audio, model_family)
    return write_cache(
        folder, {item.id: item for item in items}, _Encoder(video, text, audio, model, trigger),
        dataset={"trigger": trigger, "reference_downscale_factor": reference_downscale_factor,
                 **(dataset_info or {})},
        model=model, empty_text=(text, model["text_encoder"]),
        no_audio_reason=reason, on_progress=on_progress, text_source=text_source,
    )
