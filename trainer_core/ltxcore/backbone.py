"""The headless backbone: Lightricks' ltx-core LTXModel behind :class:`trainer_core.backbone.Backbone`.

Inputs are built exactly as ltx-trainer builds them: latents patchified frame-major (patch size 1), video
positions from ``VideoLatentPatchifier`` bounds -> ``get_pixel_coords(scale (8, 32, 32), causal_fix=True)`` with
the time axis divided by the frame rate, audio positions from ``AudioPatchifier``, per-token timesteps (sigma, 0
for conditioning tokens) and one sigma per batch element. Positions stay float32 (ComfyUI does the same; some
ltx-trainer versions round them to the model dtype). The audio-to-video / video-to-audio attention follows the
reference order (ltx-core), which ComfyUI >= v0.31 changed slightly; video-only forwards are identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..backbone import ModelInput, TextContext
from .model import LtxCoreModel, load_ltx_core_model, require_ltx_core

# ComfyUI's connectors always see at least this many tokens (real ones first, then learnable registers).
MIN_TEXT_TOKENS = 1024
_AUDIO_CHANNELS, _AUDIO_MEL_BINS = 8, 16


class LtxCoreBackbone:
    """An LTX-2.x model loaded with ltx-core, trained through LoRA hooks on its frozen Linear layers."""

    def __init__(self, model: LtxCoreModel) -> None:
        require_ltx_core()
        self.model = model
        self.transformer = model.transformer
        t_cfg = model.config["transformer"]
        self._video_dim = int(t_cfg["num_attention_heads"]) * int(t_cfg["attention_head_dim"])
        self._audio_dim = (
            int(t_cfg["audio_num_attention_heads"]) * int(t_cfg["audio_attention_head_dim"]) if model.has_audio else 0
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
        strict: bool = True,
        split: Callable[[list[nn.Module], nn.Module], None] | None = None,
    ) -> LtxCoreBackbone:
        """Load the transformer and text connectors of a single-file LTX-2.x checkpoint (no VAE).

        ``split(blocks, root)`` (``ShardedDataParallel.shard``): splits the transformer over the processes while it is
        still on the meta device, each block on its own and the transformer for the rest (patchify, AdaLN, output);
        each process then reads only its own part of the file. The text connectors stay whole on every process: each
        process runs them on its own captions, which a collective per connector call would deadlock."""
        units = None if split is None else (lambda model: split(list(model.transformer_blocks), model))
        return cls(load_ltx_core_model(path, dtype=dtype, device=device, vae=False, strict=strict, split=units))

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.transformer.patchify_proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.patchify_proj.weight.dtype

    @property
    def has_audio(self) -> bool:
        return self.model.has_audio

    # -- text ---------------------------------------------------------------------------------------------------
    def prepare_text(self, embeds: torch.Tensor) -> TextContext:
        """Run the frozen connectors on ``[1, T, D]`` text-encoder features (real tokens only), as ComfyUI does.

        ComfyUI appends learnable registers after the T real tokens up to ``max(1024, T)`` rounded up to the
        register count; ltx-core's connector gets the same by left-padding to that length with an additive mask
        (it moves the real tokens to the front and fills the rest with registers).
        """
        if embeds.ndim != 3 or embeds.shape[0] != 1:
            raise ValueError(f"text embeddings must be [1, T, D] (one caption), got {tuple(embeds.shape)}")
        video_in, audio_in = self._split_text(embeds)
        with torch.no_grad():
            video = self._run_connector(self.model.video_connector, video_in)
            audio = None
            if self.model.audio_connector is not None:
                audio = self._run_connector(self.model.audio_connector, audio_in)
        return TextContext(video, audio)

    def _split_text(self, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_cfg = self.model.config["transformer"]
        width = embeds.shape[-1]
        if self.model.family == "ltx-2":  # both connectors read the shared caption features
            expected = int(t_cfg["caption_channels"])
            if width != expected:
                raise ValueError(f"LTX-2 text embeddings must be {expected} wide, got {width}; wrong text encoder?")
            return embeds, embeds
        video_width = int(t_cfg["cross_attention_dim"])
        if not self.has_audio and width >= video_width:  # a video-only model ignores the audio features
            return embeds[..., :video_width], embeds[..., video_width:]
        audio_width = int(t_cfg["audio_cross_attention_dim"])
        if width != video_width + audio_width:
            raise ValueError(
                f"LTX-2.3 text embeddings must be {video_width} (video) + {audio_width} (audio) = "
                f"{video_width + audio_width} wide, got {width}; was the caption encoded with the LTX-2.3 text "
                "encoder of this checkpoint?"
            )
        return embeds[..., :video_width], embeds[..., video_width:]

    def _run_connector(self, connector: nn.Module, features: torch.Tensor) -> torch.Tensor:
        from ltx_core.text_encoders.gemma.embeddings_processor import convert_to_additive_mask

        weight = next(connector.parameters())
        features = features.to(device=weight.device, dtype=weight.dtype)
        tokens = features.shape[1]
        registers = connector.num_learnable_registers
        if not registers:
            return connector(features, None)[0]
        length = math.ceil(max(MIN_TEXT_TOKENS, tokens) / registers) * registers
        padded = features.new_zeros(1, length, features.shape[-1])
        padded[:, length - tokens :] = features
        binary = torch.zeros(1, length, dtype=torch.int64, device=features.device)
        binary[:, length - tokens :] = 1
        return connector(padded, convert_to_additive_mask(binary, features.dtype))[0]

    # -- forward ------------------------------------------------------------------------------------------------
    def velocity(self, inp: ModelInput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predicted velocity for the video (and audio) latents, same shapes and dtypes as the inputs."""
        from ltx_core.guidance.perturbations import BatchedPerturbationConfig

        if inp.audio is not None and not self.has_audio:
            raise ValueError("this checkpoint is video-only: pass audio=None")
        video = self._video_modality(inp)
        audio = self._audio_modality(inp) if inp.audio is not None else None
        batch = inp.video.shape[0]
        vx, ax = self.transformer(video=video, audio=audio, perturbations=BatchedPerturbationConfig.empty(batch))
        b, c, f, h, w = inp.video.shape
        vx = vx[:, vx.shape[1] - f * h * w :]  # the target's tokens, after any reference tokens
        video_out = vx.reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3).to(inp.video.dtype)
        audio_out = None
        if inp.audio is not None:
            ab, ac, at, am = inp.audio.shape
            audio_out = ax.reshape(ab, at, ac, am).permute(0, 2, 1, 3).to(inp.audio.dtype)
        return video_out, audio_out

    def _video_modality(self, inp: ModelInput):
        from ltx_core.components.patchifiers import VideoLatentPatchifier
        from ltx_core.model.transformer.modality import Modality

        b, _, f, h, w = inp.video.shape
        _check_timesteps("video", inp.video_timesteps, inp.video_sigma, b, f * h * w)
        device, dtype = self.device, self.dtype
        patchifier = VideoLatentPatchifier(patch_size=1)
        latent = patchifier.patchify(inp.video.to(device=device, dtype=dtype))
        positions = self._video_positions(inp.video, inp.frame_rate, 1)
        timesteps = inp.video_timesteps.to(device=device, dtype=dtype)
        if inp.reference is not None:
            # ltx-trainer's reference condition: prepended, clean (timestep 0), its own grid scaled spatially.
            ref = patchifier.patchify(inp.reference.to(device=device, dtype=dtype))
            latent = torch.cat([ref, latent], dim=1)
            ref_positions = self._video_positions(
                inp.reference, inp.frame_rate, inp.reference_factor, inp.reference_temporal_factor
            )
            positions = torch.cat([ref_positions, positions], dim=2)
            timesteps = torch.cat([timesteps.new_zeros(b, ref.shape[1]), timesteps], dim=1)
        return Modality(
            latent=latent,
            sigma=inp.video_sigma.to(device=device, dtype=dtype),
            timesteps=timesteps,
            positions=positions,
            context=_context(inp.text.video, b, device, dtype),
        )

    def _video_positions(
        self, latent: torch.Tensor, frame_rate: float, spatial_scale: int, temporal_scale: int = 1
    ) -> torch.Tensor:
        """Pixel-space positions of a ``[B, C, F, H, W]`` latent's tokens, y and x times ``spatial_scale``; with a
        ``temporal_scale`` S its frames run at frame_rate / S, moved back by S - 1 frames and clamped at 0 (where
        ltx-trainer puts a temporally subsampled reference: its last frame ends with the clip's)."""
        from ltx_core.components.patchifiers import VideoLatentPatchifier, get_pixel_coords
        from ltx_core.types import VIDEO_SCALE_FACTORS, VideoLatentShape

        bounds = VideoLatentPatchifier(patch_size=1).get_patch_grid_bounds(
            VideoLatentShape(*latent.shape), device=self.device
        )
        positions = get_pixel_coords(bounds, VIDEO_SCALE_FACTORS, causal_fix=True).float()
        positions[:, 0, ...] = positions[:, 0, ...] * temporal_scale / float(frame_rate)
        if temporal_scale != 1:
            positions[:, 0, ...] = (positions[:, 0, ...] - (temporal_scale - 1) / float(frame_rate)).clamp(min=0)
        positions[:, 1:, ...] *= spatial_scale
        return positions

    def _audio_modality(self, inp: ModelInput):
        from ltx_core.components.patchifiers import AudioPatchifier
        from ltx_core.model.transformer.modality import Modality
        from ltx_core.types import AudioLatentShape

        b, c, t, m = inp.audio.shape
        if (c, m) != (_AUDIO_CHANNELS, _AUDIO_MEL_BINS):
            raise ValueError(f"audio latent must be [B, 8, T, 16], got {tuple(inp.audio.shape)}")
        if inp.audio_timesteps is None or inp.audio_sigma is None or inp.text.audio is None:
            raise ValueError("audio latent given without audio_timesteps, audio_sigma or audio text context")
        _check_timesteps("audio", inp.audio_timesteps, inp.audio_sigma, b, t)
        device, dtype = self.device, self.dtype
        patchifier = AudioPatchifier(patch_size=1)
        positions = patchifier.get_patch_grid_bounds(AudioLatentShape(b, c, t, m), device=device).float()
        return Modality(
            latent=patchifier.patchify(inp.audio.to(device=device, dtype=dtype)),
            sigma=inp.audio_sigma.to(device=device, dtype=dtype),
            timesteps=inp.audio_timesteps.to(device=device, dtype=dtype),
            positions=positions,
            context=_context(inp.text.audio, b, device, dtype),
        )

    # -- training -----------------------------------------------------------------------------------------------
    def lora_targets(self) -> dict[str, nn.Module]:
        """Every Linear under ``transformer_blocks``, named relative to the transformer."""
        return {
            f"transformer_blocks.{name}": module
            for name, module in self.transformer.transformer_blocks.named_modules()
            if isinstance(module, nn.Linear)
        }

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Per-block checkpointing (ltx-core's own; active while the model is in train mode)."""
        self.transformer.set_gradient_checkpointing(bool(enabled))

    def set_compiled_blocks(self, enabled: bool, streamed: bool = False) -> bool:
        """Not offered: the headless reference backbone runs ltx-core's blocks as they are."""
        del enabled, streamed
        return False

    @contextmanager
    def training_session(self) -> Iterator[None]:
        """Freeze every base weight and put the transformer in train mode (checkpointing needs it); undo on exit."""
        modules = [m for m in (self.transformer, self.model.video_connector, self.model.audio_connector) if m]
        flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
        was_training = self.transformer.training
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            self.transformer.train()
            yield
        finally:
            self.transformer.train(was_training)
            for p, flag in flags:
                p.requires_grad_(flag)


def _context(text: torch.Tensor, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if text.shape[0] not in (1, batch):
        raise ValueError(f"text context batch {text.shape[0]} does not match latent batch {batch}")
    return text.to(device=device, dtype=dtype).expand(batch, -1, -1)


def _check_timesteps(name: str, timesteps: torch.Tensor, sigma: torch.Tensor, batch: int, tokens: int) -> None:
    if tuple(timesteps.shape) != (batch, tokens):
        raise ValueError(f"{name}_timesteps must be [B, tokens] = [{batch}, {tokens}], got {tuple(timesteps.shape)}")
    if tuple(sigma.shape) != (batch,):
        raise ValueError(f"{name}_sigma must be [B] = [{batch}], got {tuple(sigma.shape)}")
