"""Helpers for the ComfyUI backbone tests: checkpoints in the flavours ComfyUI builds, loaded the way it loads them.

Every model is loaded inside ``torch.inference_mode()``, like ComfyUI's executor runs its loader nodes, so the
weights are inference tensors exactly as in a real session. Import only after the ``comfy`` fixture ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from trainer_core.backbone import ModelInput, TextContext
from trainer_core.ltxcore.tiny import tiny_config, tiny_state_dict

BLOCK_PREFIX = "model.diffusion_model.transformer_blocks."
REPO = Path(__file__).resolve().parents[1]
FP8_MAX = 448.0  # largest float8_e4m3fn value


def load_comfy(path: Path, **model_options: Any):
    """ComfyUI's checkpoint loader under inference mode; returns the MODEL (a ModelPatcher)."""
    import comfy.sd

    with torch.inference_mode():
        return comfy.sd.load_checkpoint_guess_config(
            str(path), output_vae=False, output_clip=False, model_options=model_options
        )[0]


def _block_linear_weights(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if k.startswith(BLOCK_PREFIX) and k.endswith(".weight") and v.ndim == 2]


def _rewrite(src: Path, dst: Path, change) -> Path:
    state = load_file(str(src))
    with safe_open(str(src), "pt") as f:
        metadata = f.metadata()
    change(state)
    save_file(state, str(dst), metadata=metadata)
    return dst


def write_scaled_fp8(src: Path, dst: Path) -> Path:
    """ComfyUI's "scaled fp8" layout: block Linear weights in float8_e4m3fn with a per-tensor ``scale_weight`` and
    the ``scaled_fp8`` marker; ComfyUI turns them into ``comfy_quant`` QuantizedTensor layers."""

    def change(state: dict[str, torch.Tensor]) -> None:
        for key in _block_linear_weights(state):
            w = state[key]
            scale = (w.abs().max() / FP8_MAX).clamp_min(1e-12)
            state[key] = (w / scale).to(torch.float8_e4m3fn)
            state[key[: -len("weight")] + "scale_weight"] = scale.reshape(()).float()
        state["model.diffusion_model.scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)

    return _rewrite(src, dst, change)


def write_dtype(src: Path, dst: Path, dtype: torch.dtype) -> Path:
    """Every diffusion-model tensor stored in ``dtype`` (bf16 checkpoints; plain, unscaled fp8 block weights)."""

    def change(state: dict[str, torch.Tensor]) -> None:
        keys = _block_linear_weights(state) if dtype.is_floating_point and dtype.itemsize == 1 else [
            k for k in state if k.startswith("model.diffusion_model.")
        ]
        for key in keys:
            state[key] = state[key].to(dtype)

    return _rewrite(src, dst, change)


def write_downloaded_layout(path: Path, dtype: str) -> Path:
    """A tiny LTX-2.3 file in the layout users download: ``dtype`` "fp8" is Lightricks' scaled-fp8 file
    (``ltx-2.3-22b-dev-fp8``: float8 block weights with ``weight_scale``/``input_scale`` and the
    ``_quantization_metadata`` header), "bf16" every weight bf16. Written by the real-path benchmark's streaming
    writer (``bench/real_path_files.py``), so the tests load exactly what the benchmark loads."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_path_files", REPO / "bench" / "real_path_files.py")
    files = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(files)
    config = tiny_config(audio=True)
    config.pop("vae")
    files.write_checkpoint(path, config, dtype, torch.device("cpu"))
    return path


def write_medium_checkpoint(path: Path, num_layers: int = 4) -> tuple[Path, int]:
    """A ~110M-parameter LTX-2.3 AV checkpoint (1024-wide video, 512-wide audio); returns (path, parameters)."""
    config = tiny_config(audio=True, num_layers=num_layers)
    config["transformer"].update(
        num_attention_heads=16, attention_head_dim=64, cross_attention_dim=1024,
        connector_num_attention_heads=16, connector_attention_head_dim=64, connector_num_layers=1,
        audio_num_attention_heads=8, audio_attention_head_dim=64, audio_cross_attention_dim=512,
        audio_connector_num_attention_heads=8, audio_connector_attention_head_dim=64,
    )
    state = tiny_state_dict(json.loads(json.dumps(config)), audio=True)
    state = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    save_file(state, str(path), metadata={"config": json.dumps(config)})
    return path, sum(v.numel() for v in state.values())


def text_embeds(backbone, seed: int, tokens: int = 7) -> torch.Tensor:
    """Random LTX-2.3 text-encoder output ``[1, T, D_video + D_audio]`` for ``backbone``'s model."""
    dm = backbone.model_patcher.model.diffusion_model
    width = dm.cross_attention_dim + dm.audio_cross_attention_dim
    return torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed))


def model_input(
    text: TextContext, *, seed: int, audio: bool, batch: int = 1, first_frame: bool = False,
    sigmas: tuple[float, ...] | None = None, dtype: torch.dtype = torch.float32,
) -> ModelInput:
    """Noisy latents (3x2x2 video tokens grid, 5 audio steps) with per-token timesteps, as the engine builds them."""
    g = torch.Generator().manual_seed(seed)
    sigma = torch.tensor(sigmas or [0.6] * batch, dtype=torch.float32)
    video = torch.randn(batch, 128, 3, 2, 2, generator=g, dtype=torch.float32).to(dtype)
    v_t = sigma[:, None].expand(batch, 12).clone()
    if first_frame:
        v_t[:, :4] = 0.0  # latent frame 0 is clean conditioning
    kw: dict[str, Any] = {}
    if audio:
        kw = dict(
            audio=torch.randn(batch, 8, 5, 16, generator=g, dtype=torch.float32).to(dtype),
            audio_timesteps=sigma[:, None].expand(batch, 5).clone(),
            audio_sigma=sigma.clone(),
        )
    return ModelInput(video, v_t, sigma.clone(), text.repeat(batch) if batch > 1 else text, 24.0, **kw)


def stock_velocity(model_patcher, inp: ModelInput, text_embeds: torch.Tensor) -> list[torch.Tensor]:
    """What ComfyUI's own inference computes for ``inp`` (stock blocks, fused kernels, under inference mode)."""
    dm = model_patcher.model.diffusion_model
    with torch.inference_mode():
        context = dm.preprocess_text_embeds(text_embeds, unprocessed=True).expand(inp.video.shape[0], -1, -1)
        latents = [inp.video] + ([inp.audio] if inp.audio is not None else [])
        a_t = inp.audio_timesteps if inp.audio is not None else inp.video_sigma
        out = dm(latents, (inp.video_timesteps, a_t), context, frame_rate=inp.frame_rate,
                 transformer_options=dict(model_patcher.model_options.get("transformer_options", {})))
    return list(out) if isinstance(out, list) else [out]


def flow_loss(backbone, inp: ModelInput, seed: int) -> torch.Tensor:
    """Velocity MSE against a fixed random target (video + audio), in float64 when the model is."""
    g = torch.Generator().manual_seed(seed)
    v, a = backbone.velocity(inp)
    loss = ((v.double() - torch.randn(v.shape, generator=g, dtype=torch.float64)) ** 2).mean()
    if a is not None:
        loss = loss + ((a.double() - torch.randn(a.shape, generator=g, dtype=torch.float64)) ** 2).mean()
    return loss


def randomize_b(adapters, seed: int) -> None:
    """Non-zero B so that every A gets a gradient too (B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in adapters.lora_B:
            b.copy_(torch.randn(b.shape, generator=g) * 0.05)


def attention_lora(backbone, seed: int, rank: int = 4):
    """Rank-``rank`` adapters on every attention projection of ``backbone``, B randomised (``randomize_b``)."""
    from trainer_core.lora.adapter import LoraAdapters
    from trainer_core.lora.targets import select_targets

    adapters = LoraAdapters(select_targets(backbone.lora_targets(), "all_attention"), rank=rank, alpha=rank,
                            generator=torch.Generator().manual_seed(seed))
    randomize_b(adapters, seed=seed + 1)
    return adapters


def av_input(backbone, seed: int) -> ModelInput:
    """An audio+video input with first-frame conditioning and a random caption run through the connectors."""
    with torch.inference_mode():  # as a node would: the context is made under inference mode
        text = backbone.prepare_text(text_embeds(backbone, seed=seed))
    return model_input(text, seed=seed + 1, audio=True, first_frame=True)

