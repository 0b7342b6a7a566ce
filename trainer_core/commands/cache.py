"""``python -m trainer_core cache``: build a latent cache headless, or import an ltx-trainer one.

``cache DATASET_PATH --checkpoint CKPT --out DIR [dataset options] [--tiled-vae] [--device cuda]`` encodes the
clips with ltx-core's video VAE read from the checkpoint and, when the checkpoint holds an audio VAE
(``audio_vae.*``) and ``--skip-audio`` is not given, each clip's audio with it. ``--text-encoder PATH`` encodes
the captions with Gemma 3 12B and the checkpoint's text projection (``trainer_core.ltxcore.gemma_text``: the same
features as ComfyUI's LTX-2.3 text encoder), all of them before the VAE loads, freeing Gemma in between. Without
it the captions get the STAND-IN text encoder (``trainer_core.cache.standin_text``): for tests and the demo only.
A re-run encodes only the captions the folder lacks for that text encoder, and does not load Gemma when it lacks
none (``trainer_core.cache.text_reuse``).
``cache import-ltx-trainer PRECOMPUTED_DIR --out DIR`` converts an ltx-trainer ``.precomputed`` folder (no model
needed). Exit status 0 on success, 1 when items failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from ..config.cache import CacheConfig
from ..config.cli_options import add_section_arguments, section_from_args
from ..config.dataset import DatasetConfig

if TYPE_CHECKING:
    from ..cache.encoders import TextEncoder

HELP = "Encode a dataset into a latent cache (ltx-core VAE), or import an ltx-trainer .precomputed folder."
IMPORT = "import-ltx-trainer"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``cache DATASET_PATH ...`` or ``cache import-ltx-trainer PRECOMPUTED_DIR ...``."""
    parser.add_argument(
        "target", nargs="+", metavar="DATASET_PATH | import-ltx-trainer PRECOMPUTED_DIR",
        help="the dataset to cache, or 'import-ltx-trainer' and an ltx-trainer .precomputed folder",
    )
    parser.add_argument("--out", required=True, help="cache folder (created; re-runs only encode what changed)")
    parser.add_argument("--checkpoint", help="LTX-2.x single-file checkpoint whose video VAE encodes the clips (and "
                        "whose audio VAE encodes their audio, when it has one; --skip-audio: video only)")
    add_section_arguments(parser, CacheConfig, exclude=("folder",))  # --tiled-vae; the folder is --out
    parser.add_argument("--text-encoder", metavar="PATH",
                        help="Gemma 3 12B for the captions: ComfyUI's bf16 gemma_3_12B_it.safetensors or a Hugging "
                        "Face gemma-3-12b-it folder (fp8/NVFP4 files need ComfyUI importable). Without it captions get "
                        "the stand-in encoder, for tests and demos only")
    parser.add_argument("--device", default="cpu", help="torch device for the VAE (cpu, cuda, cuda:1)")
    parser.add_argument("--import-trigger", default="", help="import only: the --lora-trigger ltx-trainer used")
    add_section_arguments(parser, DatasetConfig, exclude=("path",), aliases={"target_fps": ["--fps"]})


def _progress(done: int, total: int, item_id: str) -> None:
    if item_id:
        logger.info("[%d/%d] %s", done + 1, total, item_id)


def has_audio_vae(checkpoint: str) -> bool:
    """Whether the single-file checkpoint holds an audio VAE (``audio_vae.*`` tensors)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        return any(key.startswith("audio_vae.") for key in f.keys())  # noqa: SIM118 - safe_open is not a dict


def _text_encoder(args: argparse.Namespace, captions: list[str], dtype: Any) -> tuple[TextEncoder, dict | None]:
    """(the text encoder for the cache, its ``text_source`` record or None): the captions the folder does not
    hold yet (and the empty one, for caption dropout) through Gemma, which is then freed; Gemma is not loaded when
    every caption is cached for these files. Without ``--text-encoder``, the stand-in."""
    from ..cache.encoders import EncodedTexts
    from ..cache.standin_text import StandinTextEncoder, text_width_for
    from ..cache.text_reuse import CachedTextEncoder, plan_texts, source_record, text_source
    from ..ltxcore.model import read_checkpoint_config

    if not args.text_encoder:
        logger.warning("captions are encoded with the stand-in text encoder (not Gemma): for tests and demos only; "
                       "give --text-encoder for a cache to train real LoRAs on")
        return StandinTextEncoder(text_width_for(read_checkpoint_config(args.checkpoint))), None
    from ..ltxcore.gemma_text import load_text_encoder

    source = text_source(args.text_encoder, args.checkpoint)
    wanted = list(dict.fromkeys([*captions, ""]))
    gemma, missing = plan_texts(
        args.out, source, wanted,
        lambda: load_text_encoder(args.text_encoder, args.checkpoint, device=args.device, dtype=dtype),
    )
    record = source_record(source, gemma)
    if isinstance(gemma, CachedTextEncoder):
        logger.info("all %d distinct captions are cached for %s: the text encoder is not loaded",
                    len(wanted), args.text_encoder)
        return gemma, record
    logger.info("encoding %d of %d distinct captions with %s (the rest are cached)", len(missing), len(wanted),
                args.text_encoder)
    try:
        return EncodedTexts(gemma, missing), record
    finally:
        close = getattr(gemma, "close", None)  # ComfyUI's loader frees its CLIP through its own model management
        if close is not None:
            close()


def run(args: argparse.Namespace) -> int:
    """Run the cache or the import; print the summary."""
    report = _import(args) if args.target[0] == IMPORT else _cache(args)
    sys.stdout.write(report.summary() + "\n")
    return 1 if report.failed else 0


def _import(args: argparse.Namespace):
    from ..cache.ltx_trainer_import import import_ltx_trainer

    if len(args.target) != 2:
        raise SystemExit(f"usage: cache {IMPORT} PRECOMPUTED_DIR --out DIR")
    return import_ltx_trainer(args.target[1], args.out, trigger=args.import_trigger, on_progress=_progress)


def _cache(args: argparse.Namespace):
    import torch

    from ..cache import CacheError, build_cache
    from ..dataset import load_dataset
    from ..ltxcore.checkpoint_file import check_base_checkpoint
    from ..ltxcore.encoders import LtxCoreAudioVae, LtxCoreVae

    if len(args.target) != 1:
        raise SystemExit("usage: cache DATASET_PATH --checkpoint CKPT --out DIR")
    if not args.checkpoint:
        raise CacheError("--checkpoint is required: the LTX-2.x checkpoint whose video VAE encodes the clips")
    family = check_base_checkpoint(args.checkpoint, "--checkpoint", needs_vae=True)
    cfg = section_from_args(DatasetConfig, args, path=args.target[0])
    cache_cfg = section_from_args(CacheConfig, args, folder=args.out)
    ds = load_dataset(cfg)
    ds.require_items()
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    # Before the VAE: Gemma is freed first.
    text, source = _text_encoder(args, [item.caption for item in ds.items], dtype)
    vae = LtxCoreVae(args.checkpoint, device=args.device, dtype=dtype, tiled=cache_cfg.tiled_vae, decoder=False)
    audio = None
    if not cfg.skip_audio and has_audio_vae(args.checkpoint):
        audio = LtxCoreAudioVae(args.checkpoint, device=args.device)  # float32: small, and keeps the latents exact
    elif not cfg.skip_audio:
        logger.warning("%s has no audio VAE (audio_vae.*): the cache holds video only", args.checkpoint)
    return build_cache(ds.items, args.out, vae, text, trigger=cfg.trigger, dataset_info={"root": str(ds.root)},
                       audio=audio, skip_audio=cfg.skip_audio, on_progress=_progress,
                       reference_downscale_factor=cfg.reference_downscale_factor, model_family=family,
                       text_source=source)
