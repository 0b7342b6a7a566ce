"""``python -m trainer_core train CONFIG.yaml``: headless LoRA training with Lightricks' ltx-core model.

The config is the same schema the Train node uses (``trainer_core.config.training.TrainConfig``), or an
ltx-trainer / LTX-2 LoRA tutorial config, translated (``trainer_core.config.foreign``; the mapping is printed).
Headless runs also need ``model.checkpoint`` (the LTX-2.3 single-file checkpoint) and ``data`` (a cache folder made by
``python -m trainer_core cache`` or the Cache node). Ctrl-C saves a checkpoint of the last completed step.

Under ``torchrun --nproc_per_node N`` each process trains on its share of every batch (``engine.distributed``):
the global batch is N x ``optimization.batch_size``; rank 0 writes the files, shows progress and logs.
``distributed.strategy: fsdp`` also splits the frozen base weights over the processes (FSDP2).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..config.foreign import Translation
    from ..engine.distributed import SingleProcess
    from ..ltxcore.backbone import LtxCoreBackbone

log = logging.getLogger(__name__)

HELP = "Train a LoRA from a YAML config (headless, ltx-core backbone); Ctrl-C saves a checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML file with the training settings (see README, 'Training config')")
    parser.add_argument(
        "--resume",
        help="'latest' (the newest checkpoint in output_dir), a checkpoint .safetensors written by this trainer "
        "(absolute, relative to output_dir or to the current folder), or a run folder / the name of a run beside "
        "output_dir (its newest checkpoint)",
    )
    parser.add_argument(
        "--text-encoder", metavar="PATH",
        help="Gemma 3 file or folder that encodes preview.prompts (as for `cache --text-encoder`); not needed when "
        "the cache used the stand-in encoder or preview.prompts is empty (the first training captions are shown)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import ConfigError
    from ..config.foreign import load_train_config
    from ..engine.distributed import (
        DataParallel,
        ShardedDataParallel,
        SingleProcess,
        launched,
        local_rank,
        tell_launcher,
    )

    translation = load_train_config(args.config)
    cfg = translation.config
    device = cfg.model.resolved_device(torch.cuda.is_available())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{args.config}: model.device = {device!r} but no CUDA GPU is available; use cpu")
    sharded = cfg.distributed.strategy == "fsdp"
    if sharded and cfg.preview.every > 0:  # before any weights load
        raise ConfigError(
            f"{args.config}: distributed.strategy is fsdp and preview.every is {cfg.preview.every}: previews are "
            "rendered by rank 0 alone, which cannot run a model whose weights are split over the processes; set "
            "preview.every: 0 (render previews from the checkpoints afterwards) or distributed.strategy: ddp"
        )
    parallel: SingleProcess = SingleProcess()
    failed = False
    try:
        if launched():  # torchrun: one of several processes, each on the GPU of its LOCAL_RANK (or the CPU, gloo)
            if device.startswith("cuda"):
                if local_rank() >= torch.cuda.device_count():  # else set_device fails with "invalid device ordinal"
                    raise ConfigError(
                        f"{args.config}: this is process {local_rank()} (LOCAL_RANK) of those the launcher started "
                        f"on this machine, which has {torch.cuda.device_count()} GPU(s): start one process per GPU "
                        "at most (torchrun --nproc_per_node, accelerate launch --num_processes)"
                    )
                device = f"cuda:{local_rank()}"
                torch.cuda.set_device(local_rank())
            parallel = (ShardedDataParallel if sharded else DataParallel).start(device.split(":")[0])
            if not parallel.is_main:
                logging.getLogger().setLevel(logging.ERROR)  # logs on rank 0 only; errors from every rank
        return _train(args, translation, device, parallel)
    except Exception as err:
        failed = True
        if launched():  # joining the others too: the launcher's summary names why this process ended
            from ..cli import user_error

            tell_launcher(user_error(err) or traceback.format_exc())
        raise
    finally:
        parallel.close(failed)


def _train(args: argparse.Namespace, translation: Translation, device: str, parallel: SingleProcess) -> int:
    """The run on ``device`` as process ``parallel.rank`` (the only one, without torchrun)."""
    import torch

    from ..atomic import save_png
    from ..cache.manifest import check_cache_for_model
    from ..cache.reader import CachedData
    from ..config import ConfigError
    from ..config.training import CHECKPOINT_UNSET, DATA_UNSET
    from ..engine.checkpoints import resolve_resume
    from ..engine.data_folder import training_folder
    from ..engine.distributed import ShardedDataParallel
    from ..engine.modes import resolve_modes
    from ..engine.run_lock import check_free
    from ..engine.trainer import Callbacks, Trainer
    from ..lorafile.match import refuse_unsupported_checkpoint
    from ..ltxcore.checkpoint_file import check_base_checkpoint, vae_identity
    from ..ltxcore.previews import attach_previews, preview_prompts
    from ..plots import loss_curve
    from ..progress import ProgressLine

    main = parallel.is_main
    if translation.dialect is not None and main:
        sys.stderr.write(translation.report(args.config) + "\n")
    cfg = translation.config
    cfg.model.device = cfg.model.resolved_device(torch.cuda.is_available())  # config.yaml records the device used
    if not cfg.model.checkpoint:
        raise ConfigError(f"{args.config}: {CHECKPOINT_UNSET}")
    if not cfg.data:
        raise ConfigError(f"{args.config}: {DATA_UNSET}")
    # Everything that can be checked without the model first: loading 22B weights takes minutes.
    refuse_unsupported_checkpoint(cfg.model.checkpoint)  # LTX-2.5, from its structure
    with parallel.together("checking the run folder and the training data"):
        folder = None
        if main:  # rank 0 takes the lock and writes the run's files, the import of an ltx-trainer folder too
            check_free(Path(cfg.output_dir))  # another live run in this folder; training itself takes the lock
            folder = training_folder(cfg.data, cfg.output_dir)  # an ltx-trainer folder is imported first
    cfg.data = str(parallel.from_main(folder))
    data = CachedData(cfg.data)
    resolve_modes(cfg.recipe, data, log_result=False)  # recipe.audio against the data, before the weights load
    resume = None
    if args.resume:
        resume = resolve_resume(args.resume, Path(cfg.output_dir), cfg.name, (Path.cwd(),), "--resume")
    family = check_base_checkpoint(cfg.model.checkpoint, "model.checkpoint", trains=True)  # a LoRA, a pickle, fp8
    check_cache_for_model(data.model, data.folder, family, vae_identity(cfg.model.checkpoint), cfg.model.checkpoint)
    # Gemma (if any) is freed before the transformer loads; rank 0 alone renders previews
    prompts = preview_prompts(cfg, data, args.text_encoder) if main else []
    backbone = load_backbone(cfg.model.checkpoint, getattr(torch, cfg.model.dtype), device, parallel)
    if cfg.distributed.strategy == "fsdp" and not isinstance(parallel, ShardedDataParallel):
        log.warning("distributed.strategy is fsdp, but this is one process (not under torchrun): nothing to split")
    trainer = Trainer(backbone, data, cfg, base_model=backbone.model.family, parallel=parallel)  # family as loaded
    if resume is not None:
        trainer.resume(resume)
    callbacks = Callbacks(on_step=ProgressLine()) if main else Callbacks()
    if prompts:
        attach_previews(callbacks, trainer, prompts)
    result = trainer.train(callbacks)
    if not main:
        return 0 if result.status != "diverged" else 1
    save_png(loss_curve(result.losses), Path(cfg.output_dir) / "loss.png")
    sys.stdout.write(f"{result.status} at step {result.step}: {result.lora_path}\n")
    if result.message:
        sys.stderr.write(result.message + "\n")
    return 0 if result.status != "diverged" else 1


def load_backbone(checkpoint: str | Path, dtype: torch.dtype, device: str, parallel: SingleProcess) -> LtxCoreBackbone:
    """The model as this process of the run holds it: whole, or (``ShardedDataParallel``) split before its weights
    are read, each process reading only its own rows of the file (also what ``bench/bench_multi_gpu.py`` loads)."""
    from ..engine.distributed import ShardedDataParallel
    from ..ltxcore.backbone import LtxCoreBackbone

    sharded = isinstance(parallel, ShardedDataParallel)
    split = (lambda blocks, root: parallel.shard(blocks, root, device)) if sharded else None
    backbone = LtxCoreBackbone.from_checkpoint(checkpoint, dtype=dtype, device=device, split=split)
    if sharded:
        log.info("frozen base weights split over %d processes (FSDP2)", parallel.world_size)
    return backbone
