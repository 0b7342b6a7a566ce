"""Training on ComfyUI's loaded MODEL: the glue between the engine and ComfyUI's progress and cancel.

Imported lazily by the Train node only (it imports ComfyUI). The engine itself stays ComfyUI-free.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.training import TrainConfig
from ..engine.data import TrainingData
from ..engine.memory import training_memory_bytes
from ..engine.trainer import Callbacks, StepInfo, Trainer, TrainResult
from .progress_history import prompt_server, server_history

log = logging.getLogger(__name__)

PROGRESS_EVENT = "ltxlora.progress"
END_EVENT = "ltxlora.progress.end"


@dataclass
class NodeProgress:
    """Feeds ComfyUI's progress bar, the text under the node and the live chart (web/ extension).

    Each event carries the step's compute time (``seconds``), the wall-clock s/step so far (``wall_seconds``,
    checkpoint saves and previews included, ``trainer_core.progress.StepClock``; the ETA shown comes from it) and the
    peak GPU memory with its source (``gpu_gib``/``gpu_source``, ``trainer_core.gpu_memory``; torch's own counter
    as ``gpu_torch_gib``).
    """

    node_id: str | None
    total: int

    def __post_init__(self) -> None:
        import comfy.model_management
        import comfy.utils

        from ..gpu_memory import PeakGpuMemory
        from ..progress import StepClock

        self.bar = comfy.utils.ProgressBar(self.total, node_id=self.node_id)
        self.clock = StepClock()
        self.memory = PeakGpuMemory(comfy.model_management.get_torch_device())
        self.run = uuid.uuid4().hex  # lets the chart tell a new run from the one it already shows
        self.history = server_history()
        if self.history is not None:  # kept on the server so the chart survives a page reload
            self.history.start(self.run, self.node_id, self.total)

    def on_step(self, info: StepInfo) -> None:
        from ..progress import format_eta

        self.bar.update_absolute(info.step, self.total)
        wall = self.clock.tick(info.step)
        # The driver's figure where it can be read: under dynamic VRAM torch's counters miss the weights.
        memory, source = self.memory.read()
        torch_peak = torch.cuda.max_memory_allocated() / 2**30 if memory is not None else None
        payload = {
            "run": self.run,
            "node": self.node_id,
            "step": info.step,
            "total": info.total,
            "loss": info.loss,
            "lr": info.lr,
            "seconds": info.seconds,
            "wall_seconds": wall,
            "gpu_gib": memory,
            "gpu_source": source,
            "gpu_torch_gib": torch_peak,
        }
        if self.history is not None:
            self.history.add(payload)
        server = prompt_server()
        if server is not None:
            server.send_sync(PROGRESS_EVENT, payload)
            per_step = info.seconds if wall is None else wall
            text = (f"step {info.step}/{info.total}  loss {info.loss:.4f}  {per_step:.2f} s/step "
                    f"({info.seconds:.2f} compute)  ETA {format_eta(per_step * (info.total - info.step))}")
            server.send_progress_text(text, self.node_id)

    def finish(self, status: str, step: int) -> None:
        """Replace the step line and its ETA with how the run ended (``ending_text``), under the node and on the chart."""
        from ..progress import ending_text

        if self.history is not None:
            self.history.finish(self.run, status)
        server = prompt_server()
        if server is not None:
            server.send_sync(END_EVENT, {"run": self.run, "node": self.node_id, "status": status, "step": step})
            server.send_progress_text(ending_text(status, step, self.total), self.node_id)

    @staticmethod
    def should_stop() -> bool:
        import comfy.model_management

        return comfy.model_management.processing_interrupted()


def reserve_training_memory(backbone, trainer: Trainer) -> int:
    """Tell ComfyUI how much memory training needs beside the weights (it streams the weights that do not fit)."""
    cfg = trainer.cfg
    blocks, width = backbone.block_shape
    backbone.memory_required = training_memory_bytes(
        trainer.data, trainer.adapters.num_parameters(), cfg.optimization.batch_size, blocks, width,
        cfg.memory.gradient_checkpointing, cfg.memory.mixed_precision,
    )
    log.info("reserving %.1f GiB beside the weights for LoRA state and activations", backbone.memory_required / 2**30)
    return backbone.memory_required


def model_family_of(model_patcher) -> str:
    """The LTX family of ComfyUI's MODEL, written into the LoRA's metadata (the checked loader compares the two)."""
    from ..lorafile.family import model_family, refuse_unsupported
    from ..lorafile.metadata import FAMILIES, FAMILY_LTX23
    from .lora import model_weight_shapes

    # unet_config: the header config ComfyUI built the model from (LTX-2.5's ff_bias=false is read from there).
    config = getattr(getattr(model_patcher.model, "model_config", None), "unet_config", None)
    guess = model_family(model_weight_shapes(model_patcher), config)
    refuse_unsupported(guess, "ComfyUI's MODEL")
    return guess.family if guess.family in FAMILIES else FAMILY_LTX23


def train_on_model(
    model_patcher,
    data: TrainingData,
    cfg: TrainConfig,
    *,
    resume: Path | None = None,
    node_id: str | None = None,
    vae=None,
    clip=None,
    audio_vae=None,
) -> TrainResult:
    """Train a LoRA on ComfyUI's loaded MODEL without copying or changing it.

    With ``cfg.preview.every`` > 0, previews are rendered with ComfyUI's sampler (``previews``); ``vae`` decodes
    them (else a latent-to-RGB approximation), ``clip`` encodes ``cfg.preview.prompts`` and ``audio_vae`` gives
    the previews of a run that generates audio their sound.
    """
    from .backbone import ComfyBackbone

    from ..engine.modes import refuse_temporal_reference_in_comfyui

    family = model_family_of(model_patcher)
    refuse_temporal_reference_in_comfyui(cfg.recipe, data)  # ComfyUI's guide nodes cannot place such a LoRA
    check_cache_vae(data, model_patcher, vae)
    backbone = ComfyBackbone(model_patcher)
    trainer = Trainer(backbone, data, recorded_config(cfg, model_patcher, data, backbone), base_model=family)
    reserve_training_memory(backbone, trainer)
    if resume is not None:
        trainer.resume(resume)
    progress = NodeProgress(node_id, cfg.optimization.steps)
    callbacks = Callbacks(on_step=progress.on_step, should_stop=progress.should_stop)
    if cfg.preview.every > 0:
        from .previews import attach_previews

        def show(step, image) -> None:
            progress.bar.update_absolute(step, cfg.optimization.steps, ("JPEG", image, 768))

        attach_previews(
            callbacks, trainer, model_patcher, data, cfg, vae=vae, clip=clip, audio_vae=audio_vae, show=show
        )
    result = None
    try:
        result = trainer.train(callbacks)
    finally:  # an exception ends the run too: the node must not keep showing an ETA
        progress.finish(result.status if result else "failed", result.step if result else trainer.run.step)
    return result


def checkpoint_file(model_patcher) -> Path | None:
    """The file ComfyUI's checkpoint loader read the MODEL from (None: another loader made it)."""
    import comfy.sd

    # ComfyUI's loaders register how to reload the model they made: (loader, its arguments, ...).
    init = getattr(model_patcher, "cached_patcher_init", None)
    if init is None or init[0] is not comfy.sd.load_checkpoint_guess_config:
        return None
    return Path(init[1][0]).resolve()


def check_cache_vae(data: TrainingData, model_patcher, vae=None) -> None:
    """Refuse a cache whose latents another video VAE encoded than the one this run goes with.

    The VAE wired into the Train node (it decodes the previews) and the video VAE inside the checkpoint file the
    MODEL came from are compared with the identity the cache recorded: a latent of another VAE lives in another
    latent space, and training on it gives a LoRA that produces garbage without any error. Either one that differs
    is a ``CacheError`` naming the cache folder and both VAEs. A cache that recorded no VAE (imported), and a MODEL
    from another loader than the checkpoint loader with no VAE wired, cannot be checked.
    """
    from ..cache.manifest import IMPORTED
    from ..cache.encoders import CacheError
    from ..ltxcore.checkpoint_file import vae_identity
    from .cache_encoders import ComfyVideoVae

    cached = (getattr(data, "model", None) or {}).get("vae")
    if cached in (None, IMPORTED):
        return
    path = checkpoint_file(model_patcher)
    readable = path is not None and path.suffix == ".safetensors" and path.is_file()  # .ckpt: not ours to open
    candidates = [
        ("the VAE wired into the Train node", lambda: ComfyVideoVae(vae).identity(), vae is not None),
        (f"the video VAE inside the MODEL's checkpoint {path}", lambda: vae_identity(path), readable),
    ]
    for what, identity, known in candidates:
        mine = identity() if known else None
        if mine is not None and mine != cached:
            raise CacheError(
                f"cache {data.folder} was encoded by another video VAE (identity {cached}) than {what} (identity "
                f"{mine}): its latents live in another latent space and a LoRA trained on them would give garbage. "
                "Cache the dataset again with this model's VAE (into another folder), or train with the model and "
                "VAE the cache was made with"
            )


def recorded_config(cfg: TrainConfig, model_patcher, data: TrainingData, backbone) -> TrainConfig:
    """``cfg`` with what ``python -m trainer_core train`` needs to rerun this run on this machine from its config.yaml.

    The node gets data and model over sockets, so the config alone names neither: this records the cache folder the
    data came from (none for latents wired into the node), the device and weight dtype trained with, and the file
    ComfyUI's checkpoint loader read (other loaders leave ``cfg.model.checkpoint`` as it was).
    """
    from ..cache.reader import CachedData

    path = checkpoint_file(model_patcher)
    model = cfg.model.model_copy(
        update={
            "checkpoint": str(path) if path is not None else cfg.model.checkpoint,
            "device": str(backbone.device),
            "dtype": "float32" if backbone.dtype == torch.float32 else "bfloat16",
        }
    )
    folder = str(data.folder.resolve()) if isinstance(data, CachedData) else None
    return cfg.model_copy(update={"data": folder, "model": model})


def direct_data(latent: dict, conditioning: list, trigger: str = "") -> TrainingData:
    """Training data from a LATENT and a CONDITIONING wired straight into the Train node (no cache).

    Every latent in the batch is one clip trained on that one caption. Caption dropout needs the cache (it
    stores the empty caption), so this data has no usable empty caption.
    """
    from ..engine.data import InMemoryData, Sample

    samples = latent["samples"]
    video, audio = (samples.tensors[0], samples.tensors[1]) if hasattr(samples, "tensors") else (samples, None)
    if video.ndim != 5:
        raise ValueError(f"the LATENT must be a video latent [B, 128, F, H, W]; got shape {tuple(video.shape)}")
    if not conditioning:
        raise ValueError("the CONDITIONING input is empty: connect a CLIP Text Encode with the LTX text encoder")
    text, extra = conditioning[0][0], conditioning[0][1]
    frame_rate = float(extra.get("frame_rate", 25.0))
    items = [
        Sample(
            key=f"latent_{i}",
            video=video[i].float().clone(),
            text=text.float().clone(),
            frame_rate=frame_rate,
            audio=None if audio is None or audio.numel() == 0 else audio[i].float().clone(),
        )
        for i in range(video.shape[0])
    ]
    return InMemoryData(items, empty_text=torch.zeros(1, 0, text.shape[-1]), trigger=trigger)
