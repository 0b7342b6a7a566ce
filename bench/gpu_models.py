"""Random-weight LTX-2.3 models for the GPU training benchmark, built without a checkpoint file.

Both models come from the same ``config`` dict (the checkpoint header layout of ``trainer_core.ltxcore.tiny``):
- ComfyUI's own classes (``supported_models.LTXAV`` -> ``model_base.LTXAV`` -> ``LTXAVModel``) wrapped in a
  ``ModelPatcher``, as ComfyUI's checkpoint loader builds them;
- Lightricks' ltx-core ``LTXModel`` and text connectors, as ltx-trainer builds them.

Layers are created on the ``meta`` device, then given storage on the target device and initialised in place, so
a 22B model never exists on the host. Every parameter is initialised, including the scale-shift tables that both
implementations create with ``torch.empty``. Random weights run exactly the kernels and shapes of real ones.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer_core.engine.data import InMemoryData, Sample
from trainer_core.ltxcore.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]

# LTX-2.3 22B sizes (the released checkpoint's header; see docs/research/gpu-anchor.md in the shared docs).
FULL_SIZES: dict[str, Any] = {
    "num_layers": 48,
    "num_attention_heads": 32,
    "attention_head_dim": 128,
    "cross_attention_dim": 4096,
    "caption_channels": 3840,
    "connector_num_attention_heads": 32,
    "connector_attention_head_dim": 128,
    "connector_num_layers": 8,
    "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64,
    "audio_cross_attention_dim": 2048,
    "audio_connector_num_attention_heads": 32,
    "audio_connector_attention_head_dim": 64,
    "av_ca_timestep_scale_multiplier": 1000,
}


def model_config(full: bool) -> dict[str, Any]:
    """The checkpoint-header config of the full 22B model, or of ``trainer_core.ltxcore.tiny``'s tiny one."""
    config = tiny_config(audio=True, num_layers=48 if full else 2)
    if full:
        config["transformer"].update(FULL_SIZES)
    config.pop("vae")
    return copy.deepcopy(config)


def boot_comfyui(root: Path, cpu: bool) -> None:
    """Import ComfyUI from ``root`` as a library (no server, no nodes): only the model code is needed."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    import comfy.model_management


def default_comfyui() -> Path:
    for c in (os.environ.get("COMFYUI_PATH"), REPO / ".gpu" / "comfyui", Path.home() / ".cache/comfyui-v0.33"):
        if c and (Path(c) / "comfy" / "model_patcher.py").is_file():
            return Path(c)
    raise FileNotFoundError("no ComfyUI tree found: set COMFYUI_PATH or install one at ~/.cache/comfyui-v0.33")


# -- initialisation -----------------------------------------------------------------------------------------------
def _init_value(name: str, p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A value like the model's own init (nn.Linear's uniform bound, ones for norms, N(0, 0.02) for tables)."""
    leaf = name.rsplit(".", 1)[-1]
    out = torch.empty(p.shape, dtype=torch.float32 if p.dtype.itemsize == 1 else p.dtype, device=p.device)
    if "scale_shift_table" in leaf:
        return out.normal_(0.0, 0.02, generator=g)
    if leaf == "learnable_registers":
        return out.uniform_(-1.0, 1.0, generator=g)
    if p.ndim >= 2:
        bound = 1.0 / math.sqrt(p[0].numel())
        return out.uniform_(-bound, bound, generator=g)
    if "norm" in name and leaf == "weight":
        return out.fill_(1.0)
    return out.uniform_(-0.02, 0.02, generator=g)


@torch.no_grad()
def materialize_(module: nn.Module, device: torch.device, seed: int) -> int:
    """Give every meta tensor storage on ``device``, move the rest there, and initialise every parameter.

    Buffers the model computed at construction (not on meta) keep their values; a meta buffer is an error,
    because it would hold garbage. Returns the number of parameters.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    for sub_name, sub in module.named_modules():
        for name, b in list(sub._buffers.items()):
            if b is not None and b.is_meta:
                raise RuntimeError(f"buffer {sub_name}.{name} was built on meta and has no value to initialise")
        for name, p in list(sub._parameters.items()):
            if p is None:
                continue
            full_name = f"{sub_name}.{name}" if sub_name else name
            data = torch.empty(p.shape, dtype=p.dtype, device=device)
            data.copy_(_init_value(full_name, data, g))
            sub._parameters[name] = nn.Parameter(data, requires_grad=p.requires_grad)
    module.to(device)  # buffers made on the host at construction
    return sum(p.numel() for p in module.parameters())


# -- ComfyUI ------------------------------------------------------------------------------------------------------
def build_comfy_patcher(config: dict[str, Any], device: torch.device, weight_dtype: torch.dtype, seed: int = 0):
    """ComfyUI's LTX-2.3 model from ``config`` with random weights on ``device``, in a ``ModelPatcher``.

    ``weight_dtype`` float8_e4m3fn stores the weights in fp8 and computes in bf16 (ComfyUI's manual cast, what the
    loaders' ``weight_dtype=fp8_e4m3fn`` option does). Built under ``inference_mode`` like ComfyUI's loaders.
    """
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = {"image_model": "ltxav", **config["transformer"], "use_keyframes_abs_pos_embedding": False}
    model_config = comfy.supported_models.LTXAV(unet_config)
    manual_cast = torch.bfloat16 if weight_dtype.itemsize == 1 else None
    model_config.set_inference_dtype(weight_dtype, manual_cast, device=device)
    with torch.inference_mode():
        model = model_config.get_model({}, "", device=torch.device("meta"))
        materialize_(model.diffusion_model, device, seed)
        model.to(device)
    # ComfyUI's own device object (cuda:0, not cuda): its memory manager matches loaded models by device.
    load_device = mm.get_torch_device() if device.type == "cuda" else device
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())


# -- ltx-core -----------------------------------------------------------------------------------------------------
def build_ltx_core(config: dict[str, Any], device: torch.device, seed: int = 0):
    """ltx-core's transformer and connectors (bf16, random) as ltx-trainer builds them: an ``LtxCoreModel``."""
    from trainer_core.ltxcore.model import LtxCoreModel, build_modules

    with torch.device("meta"):
        modules = build_modules(config, audio=True, vae=False)
    for i, m in enumerate(modules.values()):
        m.to(torch.bfloat16)
        materialize_(m, device, seed + i)
    return LtxCoreModel(
        modules["transformer"], modules["video_connector"], modules["audio_connector"], None, None, config
    )


def write_ltx_core_checkpoint(config: dict[str, Any], path: Path, device: torch.device, seed: int = 0) -> Path:
    """``build_ltx_core``'s random weights as a single-file checkpoint (safetensors, ``config`` in its header):
    what the train command loads (``trainer_core.commands.train.load_backbone``), as it loads LTX-2.3's own file.
    The host holds the whole state once, and safetensors a serialised copy while it writes."""
    import json

    from safetensors.torch import save_file

    from trainer_core.ltxcore.model import to_checkpoint_keys

    model = build_ltx_core(config, device, seed)
    state: dict[str, torch.Tensor] = {}
    for name in ("transformer", "video_connector", "audio_connector"):
        state.update(to_checkpoint_keys(name, {k: v.detach().to("cpu", copy=True).contiguous()
                                               for k, v in getattr(model, name).state_dict().items()}))
    save_file(state, str(path), metadata={"config": json.dumps(config)})
    return path


# -- data ---------------------------------------------------------------------------------------------------------
def training_data(
    video_shape: tuple[int, ...], audio_steps: int, text_tokens: int, text_width: int, seed: int = 0
) -> InMemoryData:
    """One cached clip (normalised latents, ComfyUI text-encoder output) as the cache would hand it over."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(8, audio_steps, 16, generator=g) if audio_steps else None
    sample = Sample(
        key="clip",
        video=torch.randn(*video_shape, generator=g),
        text=torch.randn(1, text_tokens, text_width, generator=g),
        frame_rate=25.0,
        audio=audio,
    )
    return InMemoryData([sample], empty_text=torch.zeros(1, 0, text_width))
