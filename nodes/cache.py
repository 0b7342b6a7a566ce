"""Cache nodes: *Cache LTX Training Latents* and *Preview Cached Latents*.

The cache node encodes the prepared dataset with the VAE, text encoder and (optionally) audio VAE already
loaded in ComfyUI (no second copy) into a folder of safetensors files plus ``manifest.json``, and outputs a
``CachedData`` on the ``LTX_TRAINING_DATA`` socket the Train node takes.
"""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io, ui

from ..trainer_core.cache.settings import parse_items, resolve_folder
from ..trainer_core.cache.writer import check_folder
from ..trainer_core.config.cache import CacheConfig, PreviewConfig
from ._node import PackNode
from ._paths import output_dir
from ._sockets import TRAINING_DATA, TRAINING_DATASET
from ._validate import validation_result
from ._widgets import category, section_from_inputs, section_inputs


def _progress(node_id: str | None):
    """A progress callback that moves the node's bar and stops at ComfyUI's cancel button."""
    import comfy.model_management
    import comfy.utils

    bar: list = []

    def update(done: int, total: int, item_id: str) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if not bar:
            bar.append(comfy.utils.ProgressBar(total, node_id=node_id))
        bar[0].update_absolute(done, total)

    return update


def _folder(cfg: CacheConfig) -> Path:
    """The cache folder: a relative name under ComfyUI's output folder, or an absolute path."""
    return resolve_folder(cfg.folder, output_dir())


class CacheLatents(PackNode):
    """Dataset + VAE + CLIP (+ audio VAE) in; cached training data out."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraCacheLatents",
            display_name="Cache LTX Training Latents",
            category=category("Cache"),
            description="Encodes every prepared clip with the VAE and every caption (plus the empty caption, for "
            "caption dropout) with the text encoder, one item at a time, into a cache folder; with an audio VAE, "
            "also each clip's audio of exactly the kept frames. Re-runs only encode what changed (source file, "
            "preparation, caption, or model).",
            inputs=[
                TRAINING_DATASET.Input("dataset", tooltip="From Load LTX Training Dataset."),
                io.Vae.Input("vae", tooltip="LTX-2.3's video VAE, as loaded by the checkpoint loader."),
                io.Clip.Input("clip", tooltip="LTX-2.3's text encoder (Gemma 3 with the checkpoint's projection)."),
                io.Vae.Input(
                    "audio_vae", optional=True,
                    tooltip="Optional: LTX-2.3's audio VAE from Load LTXV Audio VAE (same checkpoint), to cache each "
                    "clip's sound for audio+video training. Without it (or with the dataset's skip_audio) the cache "
                    "holds video only.",
                ),
                *section_inputs(CacheConfig),
            ],
            outputs=[
                TRAINING_DATA.Output(display_name="training_data", tooltip="The cached clips, for the Train node."),
                io.String.Output(display_name="report", tooltip="What was encoded, skipped, removed or failed."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        return validation_result(lambda: check_folder(_folder(section_from_inputs(CacheConfig, kwargs))))

    @classmethod
    def execute(cls, dataset, vae, clip, audio_vae=None, **kwargs) -> io.NodeOutput:
        from ..trainer_core.cache import CachedData, build_cache
        from ..trainer_core.comfy.cache_encoders import ComfyAudioVae, ComfyLtxTextEncoder, ComfyVideoVae

        cfg = section_from_inputs(CacheConfig, kwargs)
        dataset.require_items()
        folder = _folder(cfg)
        report = build_cache(
            dataset.items, folder, ComfyVideoVae(vae, tiled=cfg.tiled_vae), ComfyLtxTextEncoder(clip),
            audio=None if audio_vae is None else ComfyAudioVae(audio_vae), skip_audio=dataset.config.skip_audio,
            trigger=dataset.config.trigger, dataset_info={"root": str(dataset.root)},
            reference_downscale_factor=dataset.config.reference_downscale_factor,
            on_progress=_progress(cls.hidden.unique_id if cls.hidden else None),
        )
        data = CachedData(folder)
        text = report.summary()
        return io.NodeOutput(data, text, ui=ui.PreviewText(text))


class PreviewCachedLatents(PackNode):
    """Cached training data + VAE in; decoded frames out."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraPreviewCachedLatents",
            display_name="Preview Cached Latents",
            category=category("Cache"),
            description="Decodes chosen cached clips back to frames with the VAE, to check what the trainer will "
            "see.",
            inputs=[
                TRAINING_DATA.Input("training_data", tooltip="From Cache LTX Training Latents."),
                io.Vae.Input("vae", tooltip="The VAE that made the cache (LTX-2.3's video VAE)."),
                *section_inputs(PreviewConfig),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The decoded frames of the chosen items, in order."),
                io.String.Output(display_name="info", tooltip="Which items were decoded, and any VAE mismatch."),
            ],
        )

    @classmethod
    def execute(cls, training_data, vae, **kwargs) -> io.NodeOutput:
        from ..trainer_core.cache.preview import decode_items
        from ..trainer_core.comfy.cache_encoders import ComfyVideoVae

        cfg = section_from_inputs(PreviewConfig, kwargs)
        indices = parse_items(cfg.items, [r.id for r in training_data.records])
        frames, note = decode_items(training_data, ComfyVideoVae(vae), indices)
        return io.NodeOutput(frames, note, ui=ui.PreviewText(note))


NODES = [CacheLatents, PreviewCachedLatents]
