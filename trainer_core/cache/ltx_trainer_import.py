"""Import an ltx-trainer ``.precomputed`` folder into our cache, so its users can continue in ComfyUI.

ltx-trainer (``process_dataset.py``) writes ``latents/<media path>.pt`` (``{"latents": [128, F', H', W'],
"fps", ...}``; very old versions stored them patchified as ``[F'*H'*W', 128]``) and
``conditions/<media path>.pt`` (``{"video_prompt_embeds": [1024, 4096], "audio_prompt_embeds": [1024, 2048],
"prompt_attention_mask": [1024]}``: the Gemma feature projection's output, left-padded to 1,024 tokens) and,
unless it ran with ``--skip-audio``, ``audio_latents/<media path>.pt`` (``{"latents": [8, T, 16] float32,
"num_time_steps", "frequency_bins", "duration"}``; a clip without an audio track has no file there). Audio
latents are kept beside the video latents; a clip without one is recorded with ``audio_shape`` null. IC-LoRA
datasets also have ``reference_latents/<media path>.pt`` (the ``latents/`` dict at 1/N of the height and width);
they are kept as the items' reference latents, and N (``reference_downscale_factor``) and the temporal factor S
(``--reference-temporal-scale-factor``: the reference has (F' - 1) / S + 1 latent frames) are inferred from the
shapes, as ltx-trainer infers them.
Files are read with ``torch.load(weights_only=True)`` only, never full pickle.

ComfyUI's LTX-2.3 text encoder returns the same projection output with the padding stripped and video and
audio features concatenated: ``[1, T, 6144]`` where T is the number of real tokens. Both projections apply a
per-token norm, so a real token's features do not depend on the padding; keeping the masked-in rows and
concatenating is therefore exact (``tests/test_cache_import.py`` checks it against ltx-core's feature
extractor and, with ComfyUI present, against ComfyUI's text encoder). LTX-2 (19B) conditions carry the same
3840-wide features twice; ComfyUI returns them once.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from .encoders import (
    AUDIO_LATENT_BINS,
    AUDIO_LATENT_CHANNELS,
    LATENT_CHANNELS,
    TEXT_FAMILY_LTX2,
    TEXT_FAMILY_LTX23,
    VIDEO_FAMILY,
    CacheError,
    TextEncoder,
)
from .manifest import AUDIO_DIR, IMPORTED, LATENT_DIR, REFERENCE_DIR, TEXT_DIR, ItemRecord
from .store import file_sha256, file_stem, save_tensors, short_digest
from .writer import NO_AUDIO, NO_REFERENCE, CacheReport, CacheRun, ProgressFn, UnreadableItem, write_cache

AUDIO_LATENTS = "audio_latents"
REFERENCE_LATENTS = "reference_latents"


class _Files(NamedTuple):
    """One ltx-trainer item: its latent and conditions files, and its audio and reference latent files (or None)."""

    latent: Path
    conditions: Path
    audio: Path | None
    reference: Path | None = None


def reference_factors(latent_shape: Sequence[int], reference_shape: Sequence[int], where: str) -> tuple[int, int]:
    """The ``reference_downscale_factor`` N (``H' / h' = W' / w'``) and the temporal factor S (``(F' - 1) / (f' - 1)``)
    a target/reference latent pair was made with."""
    (_, f, h, w), (_, rf, rh, rw) = latent_shape, reference_shape
    n = h // rh if rh else 0
    if not n or (rh * n, rw * n) != (h, w):
        raise CacheError(
            f"{where}: reference latent {list(reference_shape)} is not the video latent {list(latent_shape)} divided "
            "by one whole factor in height and width; re-run ltx-trainer's process_dataset.py with a single bucket "
            "and --reference-downscale-factor"
        )
    if rf == f:
        return n, 1
    if rf < 2 or (f - 1) % (rf - 1):
        raise CacheError(
            f"{where}: reference latent has {rf} latent frames, the video {f}: not the video's frames subsampled by "
            "one whole --reference-temporal-scale-factor ((video frames - 1) / (reference frames - 1)); re-run "
            "process_dataset.py with a single bucket"
        )
    return n, (f - 1) // (rf - 1)


def find_precomputed(path: str | Path) -> Path:
    """``path`` itself when it holds ``latents/`` and ``conditions/``, else its ``.precomputed`` child."""
    path = Path(path).expanduser()
    for candidate in (path, path / ".precomputed"):
        if (candidate / "latents").is_dir() and (candidate / "conditions").is_dir():
            return candidate
    raise CacheError(
        f"{path} is not an ltx-trainer preprocessed folder: expected latents/ and conditions/ in it or in its "
        ".precomputed/ child (made by ltx-trainer's process_dataset.py)"
    )


def load_pt(path: Path) -> dict[str, Any]:
    """A ``.pt`` dict loaded with ``weights_only=True`` (a file needing full pickle is refused)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise CacheError(f"{path}: cannot be read as a tensor file with weights_only=True ({err})") from err
    if not isinstance(data, dict):
        raise CacheError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    return data


def latent_from_ltx_trainer(data: dict[str, Any], where: str) -> tuple[torch.Tensor, float]:
    """``([128, F', H', W'] float32, fps)`` from an ltx-trainer latent file's dict."""
    if "latents" not in data:
        raise CacheError(f"{where}: no 'latents' entry (keys: {sorted(data)})")
    latent = data["latents"]
    if not isinstance(latent, torch.Tensor):
        raise CacheError(f"{where}: 'latents' is a {type(latent).__name__}, not a tensor")
    if latent.ndim == 2:  # patchified [F'*H'*W', C] (early ltx-trainer versions)
        f, h, w = (int(data[k]) for k in ("num_frames", "height", "width"))
        latent = latent.reshape(f, h, w, -1).permute(3, 0, 1, 2)
    if latent.ndim != 4 or latent.shape[0] != LATENT_CHANNELS:
        raise CacheError(f"{where}: latents have shape {tuple(latent.shape)}, expected [128, F', H', W']")
    return latent.float().contiguous(), float(data.get("fps", 25.0))


def audio_from_ltx_trainer(data: dict[str, Any], where: str) -> torch.Tensor:
    """``[8, T, 16]`` float32 from an ltx-trainer audio latent file's dict (a patchified ``[T, 128]`` is unfolded)."""
    latent = data.get("latents")
    if not isinstance(latent, torch.Tensor):
        raise CacheError(f"{where}: no 'latents' tensor (keys: {sorted(data)}); is this an ltx-trainer audio latent?")
    if latent.ndim == 4 and latent.shape[0] == 1:
        latent = latent[0]
    if latent.ndim == 2 and latent.shape[1] == AUDIO_LATENT_CHANNELS * AUDIO_LATENT_BINS:  # [T, C*F]
        latent = latent.reshape(latent.shape[0], AUDIO_LATENT_CHANNELS, AUDIO_LATENT_BINS).permute(1, 0, 2)
    if latent.ndim != 3 or (latent.shape[0], latent.shape[2]) != (AUDIO_LATENT_CHANNELS, AUDIO_LATENT_BINS):
        raise CacheError(f"{where}: audio latents have shape {tuple(latent.shape)}, expected [8, T, 16]")
    return latent.float().contiguous()


def conditions_to_comfy(data: dict[str, Any], where: str) -> tuple[torch.Tensor, str]:
    """ltx-trainer's padded features + mask -> ``([1, T, D], text family)`` in ComfyUI's text encoder layout."""
    try:
        video, mask = data["video_prompt_embeds"], data["prompt_attention_mask"]
    except KeyError as err:
        raise CacheError(
            f"{where}: no {err} entry (keys: {sorted(data)}); is this an LTX-2.x conditions file?"
        ) from None
    audio = data.get("audio_prompt_embeds")
    if not all(isinstance(t, torch.Tensor) for t in (video, mask) + (() if audio is None else (audio,))):
        raise CacheError(f"{where}: the prompt entries are not tensors; is this an ltx-trainer conditions file?")
    video, mask = video.reshape(-1, video.shape[-1]), mask.reshape(-1).bool()
    if mask.shape[0] != video.shape[0] or not mask.any():
        raise CacheError(f"{where}: the attention mask ({tuple(mask.shape)}) does not fit the features "
                         f"({tuple(video.shape)}) or masks out every token")
    parts = [video[mask]]
    family = TEXT_FAMILY_LTX2 if audio is None or torch.equal(audio, data["video_prompt_embeds"]) else TEXT_FAMILY_LTX23
    if family == TEXT_FAMILY_LTX23:
        parts.append(audio.reshape(-1, audio.shape[-1])[mask])
    return torch.cat(parts, dim=-1).float().unsqueeze(0), family


def _source_key(files: _Files) -> dict[str, Any]:
    stats = [p.stat() for p in files if p is not None]
    key = {"from": IMPORTED, "conditions": str(files.conditions), "sizes": [s.st_size for s in stats],
           "mtimes_ns": [s.st_mtime_ns for s in stats]}
    key = key if files.audio is None else {**key, "audio": str(files.audio)}
    return key if files.reference is None else {**key, "reference": str(files.reference)}


def _pairs(root: Path) -> tuple[dict[str, _Files], dict[str, str]]:
    """Item id -> its files, and the latents without conditions (id -> reason)."""
    pairs, unmatched = {}, {}
    for latent_pt in sorted((root / "latents").rglob("*.pt")):
        rel = latent_pt.relative_to(root / "latents").as_posix()
        cond_pt, audio_pt, ref_pt = (root / sub / rel for sub in ("conditions", AUDIO_LATENTS, REFERENCE_LATENTS))
        if cond_pt.is_file():
            pairs[rel.removesuffix(".pt")] = _Files(latent_pt, cond_pt, audio_pt if audio_pt.is_file() else None,
                                                    ref_pt if ref_pt.is_file() else None)
        else:
            unmatched[rel.removesuffix(".pt")] = f"{latent_pt} has no matching conditions/{rel}"
    return pairs, unmatched


class _Importer:
    """``import_ltx_trainer``'s ``RecordFn``: converts an item's ``.pt`` files unless they are unchanged."""

    def __init__(self, trigger: str, audio: bool, factors: tuple[int, int]) -> None:
        self.trigger, self.audio_vae, self.factors = trigger, IMPORTED if audio else None, factors

    def __call__(self, run: CacheRun, item_id: str, files: _Files, old: ItemRecord | None) -> ItemRecord:
        if (old is not None and old.prep == _source_key(files) and old.audio_vae == self.audio_vae
                and run.file_ok(old.latent, old.latent_bytes) and run.file_ok(old.text, old.text_bytes)
                and (old.audio is None or run.file_ok(old.audio, old.audio_bytes))
                and (old.reference is None or run.file_ok(old.reference, old.reference_bytes))):
            return old  # its trigger is the one its conditions were encoded with
        try:
            latent, fps = latent_from_ltx_trainer(load_pt(files.latent), str(files.latent))
            text, family = conditions_to_comfy(load_pt(files.conditions), str(files.conditions))
            audio = None if files.audio is None else audio_from_ltx_trainer(load_pt(files.audio), str(files.audio))
            reference = None
            if files.reference is not None:
                reference = latent_from_ltx_trainer(load_pt(files.reference), str(files.reference))[0]
                factors = reference_factors(latent.shape, reference.shape, str(files.reference))
                if factors != self.factors:
                    raise CacheError(
                        f"{files.reference}: reference factors (spatial, temporal) {factors}, the first item's "
                        f"{self.factors}; one cache takes one reference_downscale_factor and temporal factor"
                    )
        except CacheError as err:
            raise UnreadableItem(str(err)) from err
        run.adopt_model({"video_family": VIDEO_FAMILY, "text_family": family, "text_width": text.shape[-1],
                         "vae": IMPORTED, "text_encoder": IMPORTED, "audio_vae": self.audio_vae})
        sha = short_digest(*(file_sha256(p) for p in files if p is not None))
        lat_rel = f"{LATENT_DIR}/{file_stem(item_id)}-{short_digest(item_id, sha)}.safetensors"
        txt_rel = f"{TEXT_DIR}/{short_digest(IMPORTED, item_id, sha)}.safetensors"
        lat = save_tensors(run.folder / lat_rel, {"video": latent}, {"id": item_id})
        txt = save_tensors(run.folder / txt_rel, {"text": text}, {"id": item_id})
        audio_record = NO_AUDIO
        if audio is not None:
            aud_rel = f"{AUDIO_DIR}/{file_stem(item_id)}-{short_digest(item_id, sha)}.safetensors"
            aud = save_tensors(run.folder / aud_rel, {"audio": audio}, {"id": item_id})
            audio_record = {"audio": aud_rel, "audio_shape": list(audio.shape), "audio_bytes": aud["bytes"],
                            "audio_sha256": aud["sha256"]}
            run.report.encoded_audio.append(item_id)
        reference_record = NO_REFERENCE
        if reference is not None:
            ref_rel = f"{REFERENCE_DIR}/{file_stem(item_id)}-{short_digest(item_id, sha)}.safetensors"
            ref = save_tensors(run.folder / ref_rel, {"video": reference}, {"id": item_id})
            reference_record = {"reference_source": str(files.reference), "reference": ref_rel,
                                "reference_shape": list(reference.shape), "reference_bytes": ref["bytes"],
                                "reference_sha256": ref["sha256"], "reference_key": sha}
            run.report.encoded_references.append(item_id)
        run.report.encoded_latents.append(item_id)
        run.report.encoded_texts.append(item_id)
        st = files.latent.stat()
        return ItemRecord(
            id=item_id, source=str(files.latent), source_size=st.st_size, source_mtime_ns=st.st_mtime_ns,
            source_sha256=sha, prep=_source_key(files), caption="", trigger=self.trigger,
            frame_rate=fps, vae=IMPORTED, text_encoder=IMPORTED, latent=lat_rel, latent_shape=list(latent.shape),
            latent_bytes=lat["bytes"], latent_sha256=lat["sha256"], text=txt_rel, text_shape=list(text.shape),
            text_bytes=txt["bytes"], text_sha256=txt["sha256"], audio_vae=self.audio_vae, **audio_record,
            **reference_record,
        )


def _first_reference_factors(pairs: dict[str, _Files]) -> tuple[int, int]:
    """N and S from the first item with a reference latent, as ltx-trainer infers them (1, 1 when none has one)."""
    files = next((f for f in pairs.values() if f.reference is not None), None)
    if files is None:
        return 1, 1
    latent = latent_from_ltx_trainer(load_pt(files.latent), str(files.latent))[0]
    reference = latent_from_ltx_trainer(load_pt(files.reference), str(files.reference))[0]
    return reference_factors(latent.shape, reference.shape, str(files.reference))


def import_ltx_trainer(
    precomputed: str | Path,
    folder: str | Path,
    *,
    trigger: str = "",
    text_encoder: TextEncoder | None = None,
    on_progress: ProgressFn | None = None,
) -> CacheReport:
    """Convert ``precomputed`` (or its ``.precomputed`` child) into the cache at ``folder``; incremental.

    Goes through the cache writer's loop (``writer.write_cache``): the same folder checks, atomic files, manifest
    saves and cleanup as ``build_cache``. An item that cannot be read is recorded as failed and left out.
    ``audio_latents/`` is kept beside the video latents; a clip without a file there has no audio (no track).
    ``reference_latents/`` (IC-LoRA) is kept too, and its factors, inferred from the first pair's shapes, are recorded.
    ``trigger``: the ``--lora-trigger`` ltx-trainer used (recorded, captions are not stored by ltx-trainer).
    ``text_encoder``: optional, to encode the empty caption for caption dropout (ltx-trainer has none).
    """
    root = find_precomputed(precomputed)
    pairs, unmatched = _pairs(root)
    if not pairs:
        raise CacheError(f"{root}: no latents/*.pt with a matching conditions/*.pt found")
    audio = (root / AUDIO_LATENTS).is_dir()
    no_audio = None if audio else f"{root} has no {AUDIO_LATENTS}/ (ltx-trainer ran with --skip-audio?)"
    empty = None if text_encoder is None else (text_encoder, text_encoder.identity())
    factor, temporal = _first_reference_factors(pairs)
    dataset = {"trigger": trigger, "imported_from": str(root), "reference_downscale_factor": factor}
    if temporal != 1:
        dataset["reference_temporal_scale_factor"] = temporal
    return write_cache(
        folder, pairs, _Importer(trigger, audio, (factor, temporal)), dataset=dataset,
        empty_text=empty, failed=unmatched, no_audio_reason=no_audio, on_progress=on_progress,
    )
