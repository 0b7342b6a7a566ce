"""Tiny random-weight LTX-2.3 (and LTX-2) checkpoints with the real architecture, for tests and demos.

The file has the exact layout of Lightricks' single-file checkpoints (``model.diffusion_model.*`` transformer and
text connectors, ``vae.encoder.*``/``vae.decoder.*``/``vae.per_channel_statistics.*``) and the ``config`` JSON
header both ComfyUI and ltx-core build the model from. With ``audio_vae=True`` it also holds the audio VAE
(``audio_vae.encoder.*``/``audio_vae.decoder.*``/``audio_vae.per_channel_statistics.*``) and a HiFi-GAN vocoder
(``vocoder.*``) with their ``audio_vae``/``vocoder`` config sections, as ComfyUI's Load LTXV Audio VAE reads them.
Only the sizes are tiny: 2 heads per stream, a couple of
layers, and a video VAE a few channels wide (its latent must stay 128 channels: ComfyUI hard-codes that). A
default file is about 8 MB. Building the weights uses ltx-core's module definitions (optional dependency).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path
from .model import build_modules, to_checkpoint_keys

FAMILIES = ("ltx-2.3", "ltx-2")

# Keys ltx-core's configurator checks against fixed values: every real LTX-2.x config carries them.
_LEGACY_KEYS: dict[str, Any] = {
    "dropout": 0.0,
    "attention_bias": True,
    "num_vector_embeds": None,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "use_linear_projection": False,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "upcast_attention": False,
    "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False,
    "qk_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "av_cross_ada_norm": True,
    "use_middle_indices_grid": True,
}

_VIDEO_HEADS, _VIDEO_HEAD_DIM = 2, 32  # video stream 64 wide
_AUDIO_HEADS, _AUDIO_HEAD_DIM = 2, 16  # audio stream 32 wide
_CAPTION_CHANNELS = 64  # stands in for Gemma's 3840 features (LTX-2: connector width; LTX-2.3: unused)


def tiny_config(
    audio: bool = True, num_layers: int = 2, family: str = "ltx-2.3", audio_vae: bool = False
) -> dict[str, Any]:
    """The full checkpoint ``config`` dict (``transformer`` and ``vae`` sections) of a tiny model.

    ``audio_vae=True`` adds the ``audio_vae`` and ``vocoder`` sections (LTX-2.x audio topology, a few channels).

    ``family="ltx-2.3"``: gated attention, cross-attention AdaLN (9-row tables), caption projection before the
    connectors (the text encoder output is ``[.., 64 + 32]``, video + audio). ``family="ltx-2"`` (19B layout):
    none of those; 6-row AdaLN, caption projection inside the transformer, text features 64 wide.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    is_23 = family == "ltx-2.3"
    video_dim, audio_dim = _VIDEO_HEADS * _VIDEO_HEAD_DIM, _AUDIO_HEADS * _AUDIO_HEAD_DIM
    transformer: dict[str, Any] = {
        **_LEGACY_KEYS,
        "num_attention_heads": _VIDEO_HEADS,
        "attention_head_dim": _VIDEO_HEAD_DIM,
        "in_channels": 128,
        "out_channels": 128,
        "num_layers": num_layers,
        "cross_attention_dim": video_dim,
        "caption_channels": _CAPTION_CHANNELS,
        "norm_eps": 1e-6,
        "attention_type": "default",
        "positional_embedding_theta": 10000.0,
        "positional_embedding_max_pos": [20, 2048, 2048],
        "timestep_scale_multiplier": 1000,
        "causal_temporal_positioning": True,
        "rope_type": "split",
        "frequencies_precision": "float64",
        "apply_gated_attention": is_23,
        "cross_attention_adaln": is_23,
        "caption_proj_before_connector": is_23,
        # Text connectors: ComfyUI always uses 4096 positions and float64 frequencies for them.
        "connector_num_attention_heads": _VIDEO_HEADS if is_23 else 2,
        "connector_attention_head_dim": _VIDEO_HEAD_DIM if is_23 else _CAPTION_CHANNELS // 2,
        "connector_num_layers": 2,
        "connector_apply_gated_attention": is_23,
        "connector_positional_embedding_max_pos": [4096],
    }
    if is_23:
        transformer.update(
            caption_projection_first_linear=False,
            caption_proj_input_norm=False,
            caption_projection_second_linear=False,
        )
    if audio:
        transformer.update(
            audio_num_attention_heads=_AUDIO_HEADS,
            audio_attention_head_dim=_AUDIO_HEAD_DIM,
            audio_in_channels=128,  # 8 latent channels x 16 mel bins
            audio_out_channels=128,
            audio_cross_attention_dim=audio_dim,
            audio_positional_embedding_max_pos=[20],
            av_ca_timestep_scale_multiplier=1,
        )
        # LTX-2.3's audio connector is as wide as the audio stream; LTX-2's reuses the connector_* sizes because
        # it runs on the same caption features as the video one.
        if is_23:
            transformer.update(
                audio_connector_num_attention_heads=_AUDIO_HEADS, audio_connector_attention_head_dim=_AUDIO_HEAD_DIM
            )
    config = {"transformer": transformer, "vae": _tiny_vae_config()}
    if audio_vae:
        config.update(_tiny_audio_configs())
    return config


def _tiny_audio_configs() -> dict[str, Any]:
    """Audio VAE (64 mel bins -> 8 x 16 latent at /4 in time, causal) and a HiFi-GAN vocoder (x240 -> 24 kHz).

    ``ch`` stays 128: ltx-core sizes the latent statistics by it and ComfyUI hard-codes 128 (= 8 x 16), so only
    the multipliers and block counts shrink.
    """
    ddconfig = {
        "double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "downsample_time": False,
        "in_channels": 2, "out_ch": 2, "ch": 128, "ch_mult": [1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [],
        "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height",
    }
    audio_vae = {
        "model": {"params": {"ddconfig": ddconfig, "sampling_rate": 16000}},
        "preprocessing": {"stft": {"filter_length": 1024, "hop_length": 160, "causal": True},
                          "mel": {"n_mel_channels": 64}},
    }
    vocoder = {
        "resblock": "1", "stereo": True, "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [16, 15, 8, 4, 4],
        "upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
    }
    return {"audio_vae": audio_vae, "vocoder": vocoder}


def _audio_state(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """ltx-core's audio encoder, decoder and vocoder for ``config``, in checkpoint keys (shared statistics)."""
    from ltx_core.model.audio_vae.model_configurator import (
        AudioDecoderConfigurator,
        AudioEncoderConfigurator,
        VocoderConfigurator,
    )

    parts = {
        "audio_vae.encoder.": AudioEncoderConfigurator.from_config(config),
        "audio_vae.decoder.": AudioDecoderConfigurator.from_config(config),
        "vocoder.": VocoderConfigurator.from_config(config),
    }
    state: dict[str, torch.Tensor] = {}
    for prefix, module in parts.items():
        for key, value in module.state_dict().items():
            if key.startswith("per_channel_statistics."):
                state["audio_vae." + key] = value
            else:
                state[prefix + key] = value
    return state


def _tiny_vae_config() -> dict[str, Any]:
    """LTX-2 video VAE topology (x32 space, x8 time, causal) with the fewest channels both loaders accept."""
    return {
        "_class_name": "CausalVideoAutoencoder",
        "dims": 3,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 128,
        "patch_size": 4,
        "norm_layer": "pixel_norm",
        "latent_log_var": "uniform",
        "use_quant_conv": False,
        "causal_decoder": False,
        "timestep_conditioning": False,
        "scaling_factor": 1.0,
        # Encoder width is the latent width (128) in ltx-core; multiplier 1 keeps it there.
        "encoder_blocks": [
            ["compress_space_res", {"multiplier": 1}],
            ["compress_time_res", {"multiplier": 1}],
            ["compress_all_res", {"multiplier": 1}],
            ["compress_all_res", {"multiplier": 1}],
        ],
        # ltx-core's decoder is base x 8 wide (three x2 upsamplers); ComfyUI finds the VAE by its first res block.
        "decoder_base_channels": 4,
        "decoder_blocks": [
            ["res_x", {"num_layers": 1, "inject_noise": False}],
            ["compress_all", {"residual": True, "multiplier": 2}],
            ["compress_all", {"residual": True, "multiplier": 2}],
            ["compress_all", {"residual": True, "multiplier": 2}],
            ["res_x", {"num_layers": 1, "inject_noise": False}],
        ],
    }


def tiny_state_dict(config: dict[str, Any], *, audio: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 weights for ``config`` in checkpoint layout, deterministic from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = build_modules(config, audio=audio, vae=True)
        for module in modules.values():
            _materialize_and_reset(module)
        audio_state = _audio_state(config) if "audio_vae" in config else {}
    gen = torch.Generator().manual_seed(seed + 1)
    state: dict[str, torch.Tensor] = dict(audio_state)
    for name, module in modules.items():
        state.update(to_checkpoint_keys(name, module.state_dict()))
    out = {}
    for key in sorted(state):
        value = _init_value(key, state[key], gen).to(torch.float32).contiguous().clone()
        if not torch.isfinite(value).all():
            raise RuntimeError(f"tiny checkpoint: {key} is not finite after initialisation (uninitialised tensor?)")
        out[key] = value
    return out


def _materialize_and_reset(module: torch.nn.Module) -> None:
    """ltx-core builds 19B caption projections on the meta device: give them storage and a normal init."""
    for sub in module.modules():
        direct = list(sub.parameters(recurse=False))
        if any(p.is_meta for p in direct):
            sub.to_empty(device="cpu", recurse=False)
            sub.reset_parameters()


def _init_value(key: str, value: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Non-trivial values for the tensors ltx-core leaves empty (or at identity), so every path matters."""
    leaf = key.rsplit(".", 1)[-1]
    if "scale_shift_table" in leaf:
        return torch.randn(value.shape, generator=gen) * 0.1
    if leaf == "learnable_registers":
        return torch.rand(value.shape, generator=gen) * 2 - 1
    if leaf == "std-of-means":
        return torch.rand(value.shape, generator=gen) + 0.5
    if leaf == "mean-of-means":
        return torch.randn(value.shape, generator=gen) * 0.1
    if ".to_gate_logits." in key:
        return torch.randn(value.shape, generator=gen) * 0.1
    if key.endswith(("q_norm.weight", "k_norm.weight")):
        return 1 + torch.randn(value.shape, generator=gen) * 0.1
    return value


def write_tiny_checkpoint(
    path: str | Path,
    *,
    audio: bool = True,
    seed: int = 0,
    num_layers: int = 2,
    family: str = "ltx-2.3",
    audio_vae: bool = False,
) -> Path:
    """Write a tiny single-file checkpoint (safetensors with the ``config`` header) atomically; return its path.

    ``audio_vae=True`` adds the audio VAE and vocoder (``audio_vae.*``, ``vocoder.*``) for audio caching.
    """
    from safetensors.torch import save_file

    config = tiny_config(audio=audio, num_layers=num_layers, family=family, audio_vae=audio_vae)
    state = tiny_state_dict(copy.deepcopy(config), audio=audio, seed=seed)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"config": json.dumps(config)})
    return Path(path)
