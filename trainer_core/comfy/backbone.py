"""The engine's ``Backbone`` on the LTX-2.x model ComfyUI already loaded (its ``MODEL``, a ``ModelPatcher``).

Training reuses ComfyUI's own ``LTXAVModel`` and its weights as they are: no reload, no copy. What it takes to
train through it, all of it undone when ``training_session()`` exits (normally, on error or on cancel):

- ``comfy.model_management.in_training = True``: ComfyUI's fused kernels (RMS-AdaLN, RoPE, FFN) have no backward;
  the flag makes the model use plain PyTorch ops.
- The model is loaded through ``comfy.model_management.load_models_gpu`` like any sampler would, so ComfyUI's
  memory manager decides what stays on the device. With checkpointed blocks, ``streaming.BlockStreamer`` takes
  over the blocks it left on the host (without checkpointing ComfyUI's own per-layer copies run them). Under
  ComfyUI's dynamic VRAM mode (comfy-aimdo, its default on NVIDIA) that is every block: the streamer keeps as many
  as the free device memory allows in slots of their own for the whole session (``device_budget``), after asking
  aimdo to give back what it holds of the model, and rotates the rest through two slots from pinned host memory,
  so the blocks run compiled instead of through aimdo's per-layer paging.
- Every transformer block runs ``blocks.av_block_forward`` (out of place, reference video-to-audio order,
  optional per-block checkpointing), installed through ``patches_replace`` on a ``ModelPatcher.clone()``: the
  user's MODEL never sees it.
- Inference-mode weights are swapped for zero-copy aliases (``inference.trainable_aliases``).
- Quantized (scaled fp8) layers dequantize their weights instead of running ComfyUI's fp8-activation training path,
  which torch.compile cannot trace (``quantized.dequantized_matmuls``); inside compiled blocks the dequantize is
  traced as plain ops (``quantized.traced_fp8_dequantize``).
- ``torch.inference_mode(False)`` + ``enable_grad`` for the block.

The diffusion model is called directly (not through ``BaseModel.apply_model``, which returns x0 and runs the
text connectors inside ``extra_conds``): it takes ``[video, audio]`` latents in ComfyUI's layouts, per-token
timesteps (sigma per token, 0 for clean conditioning tokens: how ComfyUI's ``LTXAV.process_timestep`` turns a
``denoise_mask`` into first-frame conditioning) and returns the velocity.

IC-LoRA reference latents go in as ComfyUI's LTXV Add Guide (frame 0, strength 1) puts a guide into a sampled
latent: dilated into the full grid (holes marked by a negative ``denoise_mask``, which the model drops), appended as
extra latent frames at timestep 0, with ``keyframe_idxs`` positions whose spatial ends reach ``(N-1)*32`` px further.
The model sees exactly what it sees in ComfyUI's guide nodes, and positions equal to ltx-trainer's (its own grid
times N); token order does not matter to attention under RoPE, so appending equals ltx-trainer's prepending.

Cross-attention gates: ComfyUI derives the audio-to-video gate from ``max(audio timesteps)`` over the whole
batch (and vice versa). Lightricks' reference uses each sample's own sigma of the other modality; both agree for
batch 1, and for batches with per-sample sigmas we pass the reference gates (``blocks.OutOfPlaceBlock``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..backbone import ModelInput, TextContext
from ..gpu_memory import within_memory_fraction
from .blocks import OPTIONS_KEY, install_out_of_place_blocks
from .inference import trainable_aliases
from .quantized import dequantized_matmuls, traced_fp8_dequantize
from .streaming import BlockStreamer, slot_reserve_bytes, uniform_cast_flag

logger = logging.getLogger(__name__)

# Device memory left beside the streamer's slots for what aimdo still pages in for the layers outside the blocks
# (patchify, AdaLN, output projection) and its cast buffers.
_AIMDO_HEADROOM = 1 << 30

def _is_linear_like(module: nn.Module) -> bool:
    """nn.Linear and ComfyUI's Linear flavours, including the quantized ones that do not subclass nn.Linear."""
    if isinstance(module, nn.Linear):
        return True
    weight = getattr(module, "weight", None)
    return hasattr(module, "in_features") and hasattr(module, "out_features") and weight is not None \
        and weight.ndim == 2


def _trainable_input(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t`` on the model's device/dtype as a normal tensor: inputs made under inference mode cannot be saved."""
    t = t.to(device=device, dtype=dtype or t.dtype)
    return t.clone() if t.is_inference() else t


class ComfyBackbone:
    """``trainer_core.backbone.Backbone`` over a ComfyUI LTX-2.x ``ModelPatcher`` (the MODEL socket value).

    ``memory_required`` (bytes, settable) is what ComfyUI should keep free on the device beside the weights for
    activations and optimizer state when it loads the model (0: ComfyUI's inference reserve; the Train node sets
    ``engine.memory``'s estimate, see ``training.reserve_training_memory``). With checkpointing, ``load`` adds the
    two slots of the block streamer. ``streamed_blocks`` forces blocks through the streamer with all their
    weights (tests exercise it where nothing is offloaded); by default it streams what ComfyUI left on the host.
    ``resident_bytes`` is the device memory the streamer may keep whole blocks in (None: ``device_budget()``
    under dynamic VRAM, else 0, ComfyUI having already loaded what fits).
    """

    def __init__(self, model_patcher: Any, memory_required: int = 0, streamed_blocks: Iterable[int] | None = None,
                 resident_bytes: int | None = None) -> None:
        diffusion_model = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
        blocks = getattr(diffusion_model, "transformer_blocks", None)
        if blocks is None or not hasattr(diffusion_model, "audio_embeddings_connector"):
            raise TypeError(
                f"MODEL is a {type(diffusion_model).__name__}, not an LTX-2.x audio-video model (LTXAVModel): "
                "load an LTX-2.3 checkpoint with ComfyUI's checkpoint loader"
            )
        self._patcher = model_patcher
        self._dm = diffusion_model
        self.memory_required = int(memory_required)
        self._checkpointing = False
        self._compile: str | None = None  # None, "resident" or "all" (see blocks.OutOfPlaceBlock)
        self._session_options: dict[str, Any] | None = None
        self._streamed_blocks = None if streamed_blocks is None else tuple(streamed_blocks)
        self._resident_bytes = resident_bytes
        self._pinned: dict[tuple[int, int], torch.Tensor] = {}  # pinned host copies, kept across streamer plans
        self._streamer: BlockStreamer | None = None  # planned at the first checkpointed block after a load
        self.streamed_bytes = 0  # weight bytes the streamer copied to the device, over all sessions (logged)

    # -- Backbone properties ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return torch.device(self._patcher.load_device)

    @property
    def dtype(self) -> torch.dtype:
        return self._patcher.model.get_dtype_inference()

    @property
    def has_audio(self) -> bool:
        return True  # every LTXAVModel has the audio stream; video-only training leaves it idle

    @property
    def model_patcher(self) -> Any:
        return self._patcher

    @property
    def block_shape(self) -> tuple[int, int]:
        """(number of transformer blocks, video hidden width): what activation memory scales with."""
        return len(self._dm.transformer_blocks), int(self._dm.inner_dim)

    # -- text ----------------------------------------------------------------------------------------------------
    def prepare_text(self, embeds: torch.Tensor) -> TextContext:
        """Run the frozen connectors on ComfyUI's LTX-2.x text-encoder output ``[1, T, D]`` once, without autograd."""
        import comfy.model_management as mm

        if self._session_options is None:  # in a session the model is loaded: keep the streamer's resident blocks
            self.load()
        dm = self._dm
        previous_flag = mm.in_training
        try:
            # Outside inference mode the result is a normal tensor that autograd may save later. The unfused
            # kernels (in_training) also run in float64, which the gradient tests use.
            mm.in_training = True
            with torch.inference_mode(False), torch.no_grad():
                ctx = dm.preprocess_text_embeds(embeds.to(self.device, self.dtype), unprocessed=True)
        finally:
            mm.in_training = previous_flag
        video_width = dm.inner_dim if dm.caption_proj_before_connector else dm.caption_channels
        return TextContext(ctx[..., :video_width], ctx[..., video_width:])

    # -- forward ---------------------------------------------------------------------------------------------
    def velocity(self, inp: ModelInput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predicted velocity for ``inp`` (ComfyUI layouts); inside ``training_session`` with our blocks."""
        dev, dtype = self.device, self.dtype
        video = _trainable_input(inp.video, dev, dtype)
        v_t = _trainable_input(inp.video_timesteps, dev, torch.float32)
        guide_args: dict[str, torch.Tensor] = {}
        if inp.reference is not None:
            guide, guide_args = self._reference_guide(inp, dev, dtype)
            video = torch.cat([video, guide], dim=2)
            v_t = torch.cat([v_t, v_t.new_zeros(v_t.shape[0], guide[0, 0].numel())], dim=1)
        latents = [video]
        audio = inp.audio is not None and inp.audio.shape[2] > 0
        if audio:
            latents.append(_trainable_input(inp.audio, dev, dtype))
            a_t = _trainable_input(inp.audio_timesteps, dev, torch.float32)
        else:
            # ComfyUI's own video-only call: the audio stream gets the scalar sigma and no tokens.
            a_t = _trainable_input(inp.video_sigma, dev, torch.float32)
        if inp.text.audio is None:
            raise ValueError("ComfyBackbone needs the audio text context too: build it with prepare_text()")
        # The model splits one [B, L, D_video + D_audio] context; a batch-1 caption is shared by the batch.
        context = _trainable_input(torch.cat([inp.text.video, inp.text.audio], -1), dev, dtype)
        context = context.expand(video.shape[0], -1, -1)

        options = self._transformer_options(inp, audio)
        out = self._dm(latents, (v_t, a_t), context, attention_mask=None, frame_rate=float(inp.frame_rate),
                       transformer_options=options, **guide_args)
        frames = inp.video.shape[2]  # the guide frames' output is dropped, as LTXV Crop Guides does
        if audio:
            return out[0][:, :, :frames].to(inp.video.dtype), out[1].to(inp.audio.dtype)
        return out[:, :, :frames].to(inp.video.dtype), None

    def _reference_guide(self, inp: ModelInput, dev: torch.device, dtype: torch.dtype
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reference as LTXV Add Guide (frame 0, strength 1, ``iclora_parameters``) appends it: the dilated
        guide frames and the model's ``keyframe_idxs`` and ``denoise_mask`` arguments. A temporal factor S (which
        stock LTXV Add Guide of ComfyUI v0.33 does not know) puts the guide frames where ltx-trainer puts them:
        pixel frame times S, moved back by S - 1 and clamped at 0."""
        from comfy.ldm.lightricks.symmetric_patchifier import latent_to_pixel_coords

        n, ref = inp.reference_factor, _trainable_input(inp.reference, dev, dtype)
        b, c, frames, h, w = ref.shape
        height, width = inp.video.shape[3:]
        if (h * n, w * n) != (height, width):
            raise ValueError(f"reference latent {h}x{w} is not the video latent {height}x{width} divided by {n}")
        guide = ref.new_zeros(b, c, frames, height, width)
        guide[..., ::n, ::n] = ref
        guide_mask = torch.full((b, 1, frames, height, width), -1.0, device=dev)
        guide_mask[..., ::n, ::n] = 1.0
        target_mask = torch.ones(b, 1, *inp.video.shape[2:], device=dev)
        _, latent_coords = self._dm.patchifier.patchify(guide)
        scale = self._dm.vae_scale_factors
        coords = latent_to_pixel_coords(latent_coords, scale, causal_fix=True)
        coords[:, 1:, :, 1:] += (n - 1) * torch.tensor(scale[1:], device=dev, dtype=coords.dtype).view(1, -1, 1, 1)
        s = inp.reference_temporal_factor
        if s != 1:
            coords[:, 0] = (coords[:, 0] * s - (s - 1)).clamp(min=0)
        return guide, {"keyframe_idxs": coords, "denoise_mask": torch.cat([target_mask, guide_mask], dim=2)}

    def _transformer_options(self, inp: ModelInput, audio: bool) -> dict[str, Any]:
        if self._session_options is None:  # outside training: ComfyUI's stock blocks, as its samplers run them
            options = dict(self._patcher.model_options.get("transformer_options", {}))
            options["prefetch_dynamic_vbars"] = self._patcher.is_dynamic()
            return options
        options = dict(self._session_options)
        checkpoint = self._checkpointing and torch.is_grad_enabled()
        settings: dict[str, Any] = {"checkpoint": checkpoint, "compile": self._compile}
        if checkpoint:
            if self._streamer is None:
                self._streamer = self._plan_streamer()
            settings["streamer"] = self._streamer if self._streamer.plan else None
            if settings["streamer"] is not None:
                # The streamer puts each block it plans on the device itself. ComfyUI's per-block prefetch (dynamic
                # VRAM) would fault the same weights into aimdo's pages as well before every block, a second copy
                # of the blocks on the device, and make each block's compute wait for that copy.
                options["prefetch_dynamic_vbars"] = False
        if audio and inp.audio_sigma is not None and inp.video.shape[0] > 1:
            settings["cross_gates"] = self._reference_cross_gates(inp)
        options[OPTIONS_KEY] = settings
        return options

    def _reference_cross_gates(self, inp: ModelInput) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample a2v / v2a gate embeddings from the other modality's sigma (Lightricks' reference)."""
        dm, batch, dtype = self._dm, inp.video.shape[0], self.dtype
        factor = dm.av_ca_timestep_scale_multiplier  # sigma * 1000 * (av_ca_multiplier / 1000)
        gates = []
        for adaln, sigma in ((dm.av_ca_a2v_gate_adaln_single, inp.audio_sigma),
                             (dm.av_ca_v2a_gate_adaln_single, inp.video_sigma)):
            sigma = _trainable_input(sigma.reshape(batch), self.device, torch.float32)
            emb, _ = adaln(sigma * factor, {"resolution": None, "aspect_ratio": None}, batch_size=batch,
                           hidden_dtype=dtype)
            gates.append(emb.view(batch, 1, -1))
        return gates[0], gates[1]

    # -- LoRA and memory -------------------------------------------------------------------------------------
    def lora_targets(self) -> dict[str, nn.Module]:
        """Every Linear-like module under ``transformer_blocks``, named as ltx-core names them (same set)."""
        return {
            f"transformer_blocks.{name}": module
            for name, module in self._dm.transformer_blocks.named_modules()
            if _is_linear_like(module)
        }

    def _plan_streamer(self) -> BlockStreamer:
        """The streamer for this load: under dynamic VRAM every block, as many kept resident as fit."""
        dynamic = self._patcher.is_dynamic()
        budget = self._resident_bytes if self._resident_bytes is not None else self.device_budget() if dynamic else 0
        streamer = BlockStreamer(self._dm.transformer_blocks, self.device, self._streamed_blocks,
                                 resident_bytes=budget, pinned=self._pinned if dynamic else None)
        if dynamic:
            import comfy.model_management as mm

            # What the slots take, and training and aimdo still need beside them (device_budget's terms).
            short = streamer.device_bytes + self.memory_required + _AIMDO_HEADROOM - mm.get_free_memory(self.device)
            if short > 0:  # aimdo holds pages of this model that the slots replace: have it give them back
                self._patcher.partially_unload(self._patcher.offload_device, memory_to_free=short)
        return streamer

    def device_budget(self) -> int:
        """Device bytes whole blocks may take beside training's reserve (``memory_required``), the two rotating
        slots and ComfyUI's headroom: what ComfyUI says is free (aimdo's reclaimable pages included), within the
        process's memory fraction if one is set."""
        import comfy.model_management as mm

        dev = self.device
        free = within_memory_fraction(dev, self._patcher.get_free_memory(dev) - mm.extra_reserved_memory())
        slots = slot_reserve_bytes(self._dm.transformer_blocks)
        return max(0, free - self.memory_required - slots - _AIMDO_HEADROOM)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self._checkpointing = bool(enabled)

    def set_compiled_blocks(self, enabled: bool, streamed: bool = False) -> bool:
        self._compile = ("all" if streamed else "resident") if enabled else None
        return enabled

    @property
    def streamer(self) -> BlockStreamer | None:
        """The block streamer of the current load (None before the first checkpointed step after a load)."""
        return self._streamer

    def load(self) -> None:
        """(Re)load the model through ComfyUI with training's reserve; streamed weights go back to the host first.

        Afterwards the loaded layers' cast flags are made uniform (``streaming.uniform_cast_flag``)."""
        import comfy.model_management as mm

        self.release_streamed_blocks()
        reserve = self.memory_required + (slot_reserve_bytes(self._dm.transformer_blocks) if self._checkpointing else 0)
        mm.load_models_gpu([self._patcher], memory_required=reserve)
        for module in self._dm.transformer_blocks.modules():
            uniform_cast_flag(module, self.device)

    def release_streamed_blocks(self) -> None:
        """Point streamed weights back at their host copies before anything else (a loader, a sampler) runs."""
        if self._streamer is not None:
            self._streamer.release()
            self.streamed_bytes += self._streamer.bytes_copied
            self._streamer = None

    @contextmanager
    def training_session(self) -> Iterator[None]:
        """Make the shared model trainable through hooks for the block; undo everything on any exit."""
        import comfy.model_management as mm

        previous_flag = mm.in_training
        try:
            mm.in_training = True
            # Weights ComfyUI moves while loading must stay inference tensors like the rest of the model:
            # moved outside inference mode they break its next inference forward.
            with torch.inference_mode():
                self.load()
            with torch.inference_mode(False), torch.enable_grad():
                patched = self._patcher.clone()  # shares the weights; only its options differ
                install_out_of_place_blocks(patched, self._dm.transformer_blocks)
                options = dict(patched.model_options["transformer_options"])
                options["prefetch_dynamic_vbars"] = self._patcher.is_dynamic()
                with trainable_aliases(self._dm), dequantized_matmuls(self._dm), traced_fp8_dequantize():
                    self._session_options = options
                    try:
                        yield
                    finally:  # before the aliases go: they must find the weights where ComfyUI put them
                        self.release_streamed_blocks()
                        self._pinned.clear()  # the pinned host copies live as long as the session
        finally:
            self._session_options = None
            mm.in_training = previous_flag
