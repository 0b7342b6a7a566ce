"""``python -m trainer_core cache``: build a latent cache headless, or import an ltx-trainer one.

``cache DATASET_PATH --checkpoint CKPT --out DIR [dataset options] [--tiled-vae] [--device cuda]`` encodes the
clips with ltx-core's video VAE read from the checkpoint and, when the checkpoint holds an audio VAE
(``audio_vae.*``) and ``--skip-audio`` is not given, each clip's audio with it. Captions are encoded with the
STAND-IN text encoder (``trainer_core.cache.standin_text``): Gemma 3 12B is only used inside ComfyUI, so a
headless cache is for tests and the demo, not for real training. ``cache import-ltx-trainer PRECOMPUTED_DIR --out
DIR`` converts an ltx-trainer ``.precomputed`` folder (no model needed). Exit status 0 on success, 1 when items failed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..config.cache import CacheConfig
from ..config.cli_options import add_section_arguments, section_from_args
from ..config.dataset import DatasetConfig

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
    from ..ltxcore.encoders import LtxCoreAudioVae, LtxCoreVae
    from ..cache.standin_text import StandinTextEncoder, text_width_for
    from ..dataset import load_dataset
    from ..ltxcore.model import read_checkpoint_config

    if len(args.target) != 1:
        raise SystemExit("usage: cache DATASET_PATH --checkpoint CKPT --out DIR")
    if not args.checkpoint:
        raise CacheError("--checkpoint is required: the LTX-2.x checkpoint whose video VAE encodes the clips")
    cfg = section_from_args(DatasetConfig, args, path=args.target[0])
    cache_cfg = section_from_args(CacheConfig, args, folder=args.out)
    ds = load_dataset(cfg)
    if not ds.items:
        raise CacheError(f"dataset {cfg.path} has no usable item; see `python -m trainer_core dataset {cfg.path}`")
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    vae = LtxCoreVae(args.checkpoint, device=args.device, dtype=dtype, tiled=cache_cfg.tiled_vae, decoder=False)
    audio = None
    if not cfg.skip_audio and has_audio_vae(args.checkpoint):
        audio = LtxCoreAudioVae(args.checkpoint, device=args.device)  # float32: small, and keeps the latents exact
    elif not cfg.skip_audio:
        logger.warning("%s has no audio VAE (audio_vae.*): the cache holds video only", args.checkpoint)
    text = StandinTextEncoder(text_width_for(read_checkpoint_config(args.checkpoint)))
    logger.warning("captions are encoded with the stand-in text encoder (not Gemma): for tests and demos only")
    return build_cache(ds.items, args.out, vae, text, trigger=cfg.trigger, dataset_info={"root": str(ds.root)},
                       audio=audio, skip_audio=cfg.skip_audio, on_progress=_progress)
