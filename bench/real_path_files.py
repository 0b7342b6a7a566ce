"""Files for the real-path benchmark: an LTX-2.3 checkpoint as users download it, and a latent cache.

``write_checkpoint`` streams a random-weight single-file checkpoint tensor by tensor (the header first, from shapes
alone), so a 43 GB bf16 file needs a few hundred MB of host memory. The key layout and ``config`` header are
``trainer_core.ltxcore.tiny``'s (the real layout: ``model.diffusion_model.*`` transformer and text connectors,
``vae.*``), with the transformer at full 22B size and the tiny VAE (training never runs the VAE; ComfyUI's loader
only needs one). ``dtype="fp8"`` writes the layout of Lightricks' ``ltx-2.3-22b-dev-fp8.safetensors``: every
transformer-block Linear weight in float8_e4m3fn with float32 scalar ``weight_scale`` and ``input_scale`` tensors,
and the ``_quantization_metadata`` header ComfyUI reads (``comfy.utils.convert_old_quants``) to build its
``comfy_quant`` QuantizedTensor layers; everything else in bf16.

``write_cache`` writes the pack's latent cache format (manifest + safetensors) with random latents and text.
"""

from __future__ import annotations

import copy
import json
import math
import struct
from pathlib import Path
from typing import Any

import torch

FP8_MAX = 448.0  # largest float8_e4m3fn value
BLOCK_PREFIX = "model.diffusion_model.transformer_blocks."
_ST_DTYPES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.uint8: "U8",
}


def checkpoint_config(config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint header of ``config``'s transformer with the tiny VAE (``trainer_core.ltxcore.tiny``)."""
    from trainer_core.ltxcore.tiny import tiny_config

    return {"transformer": copy.deepcopy(config["transformer"]), "vae": tiny_config()["vae"]}


def checkpoint_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every transformer/connector key of ``config`` with its shape, from ltx-core's modules built on ``meta``."""
    from trainer_core.ltxcore.model import build_modules, to_checkpoint_keys

    with torch.device("meta"):
        modules = build_modules(config, audio=True, vae=False)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, module in modules.items():
        shapes.update({k: tuple(v.shape) for k, v in to_checkpoint_keys(name, module.state_dict()).items()})
    return shapes


def _tiny_vae_state() -> dict[str, torch.Tensor]:
    from trainer_core.ltxcore.tiny import tiny_config, tiny_state_dict

    state = tiny_state_dict(tiny_config(audio=False, num_layers=1), audio=False, seed=0)
    return {k: v for k, v in state.items() if k.startswith("vae.")}


def is_quantized(key: str, shape: tuple[int, ...]) -> bool:
    """Which weights the fp8 file stores in float8: the 2-D Linear weights of the transformer blocks."""
    return key.startswith(BLOCK_PREFIX) and key.endswith(".weight") and len(shape) == 2


def _init(key: str, shape: tuple[int, ...], g: torch.Generator, device: torch.device) -> torch.Tensor:
    """A float32 value like the model's own init (see ``gpu_models._init_value``); every tensor is set."""
    leaf = key.rsplit(".", 1)[-1]
    out = torch.empty(shape, dtype=torch.float32, device=device)
    if "scale_shift_table" in leaf:
        return out.normal_(0.0, 0.1, generator=g)
    if leaf == "learnable_registers":
        return out.uniform_(-1.0, 1.0, generator=g)
    if len(shape) >= 2:
        bound = 1.0 / math.sqrt(math.prod(shape[1:]))
        return out.uniform_(-bound, bound, generator=g)
    if "norm" in key and leaf == "weight":
        return out.normal_(1.0, 0.1, generator=g)
    return out.uniform_(-0.02, 0.02, generator=g)


def _plan(config: dict[str, Any], dtype: str) -> tuple[list[tuple[str, tuple[int, ...], torch.dtype]], dict]:
    """(key, shape, stored dtype) of every tensor in file order, and the quantization metadata (fp8)."""
    plan: list[tuple[str, tuple[int, ...], torch.dtype]] = []
    layers: dict[str, dict[str, str]] = {}
    for key, shape in checkpoint_shapes(config).items():
        if dtype == "fp8" and is_quantized(key, shape):
            layer = key[: -len(".weight")]
            layers[layer] = {"format": "float8_e4m3fn"}
            plan += [(key, shape, torch.float8_e4m3fn), (layer + ".weight_scale", (), torch.float32),
                     (layer + ".input_scale", (), torch.float32)]
        else:
            plan.append((key, shape, torch.bfloat16))
    return sorted(plan), ({"format_version": "1.0", "layers": layers} if layers else {})


def write_checkpoint(path: Path, config: dict[str, Any], dtype: str, device: torch.device, seed: int = 0) -> dict:
    """Stream a random-weight checkpoint for ``config`` (``dtype`` "bf16" or "fp8") to ``path``.

    Values are drawn on ``device`` (the GPU makes 22B values in seconds) one tensor at a time and written as they
    come. Returns ``{"bytes", "tensors", "quantized"}``.
    """
    if dtype not in ("bf16", "fp8"):
        raise ValueError(f"dtype must be bf16 or fp8, got {dtype!r}")
    plan, quant = _plan(config, dtype)
    vae = _tiny_vae_state()
    entries = plan + [(k, tuple(v.shape), v.dtype) for k, v in sorted(vae.items())]
    header: dict[str, Any] = {"__metadata__": {"config": json.dumps(checkpoint_config(config))}}
    if quant:
        header["__metadata__"]["_quantization_metadata"] = json.dumps(quant)
    offset = 0
    for key, shape, dt in entries:
        size = math.prod(shape) * dt.itemsize
        header[key] = {"dtype": _ST_DTYPES[dt], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    g = torch.Generator(device=device).manual_seed(seed)
    scales: dict[str, torch.Tensor] = {}
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for key, shape, dt in entries:
            if key in vae:
                value = vae[key]
            elif key.endswith(".weight_scale"):
                value = scales.pop(key)
            elif key.endswith(".input_scale"):
                value = torch.tensor(0.02, dtype=torch.float32)  # the real file's are about 0.01-0.02
            else:
                value = _init(key, shape, g, device)
                if dt == torch.float8_e4m3fn:
                    scale = (value.abs().amax() / FP8_MAX).clamp_min(1e-12)
                    scales[key[: -len("weight")] + "weight_scale"] = scale.float().cpu().reshape(())
                    value = (value / scale).to(dt)
            data = value.to(dt).contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
            if len(data) != header[key]["data_offsets"][1] - header[key]["data_offsets"][0]:
                raise RuntimeError(f"{key}: wrote {len(data)} bytes, the header says otherwise")
            f.write(data)
    if scales:  # a scale sorted before its weight would have been missing above
        raise RuntimeError(f"scales never written: {sorted(scales)[:3]}")
    tmp.replace(path)
    return {"bytes": path.stat().st_size, "tensors": len(entries), "quantized": len(quant.get("layers", {}))}


def write_cache(
    folder: Path, video_shape: tuple[int, ...], text_tokens: int, text_width: int, audio_shape: tuple[int, ...] | None,
    items: int = 1, seed: int = 0,
) -> dict:
    """A latent cache as the cache node writes it (manifest + safetensors files) with random tensors.

    ``audio_shape`` adds an audio latent per item where the manifest has audio fields. Returns what was written.
    """
    from dataclasses import fields

    from trainer_core.cache.manifest import ItemRecord, Manifest
    from trainer_core.cache.store import save_tensors

    audio_ok = audio_shape is not None and "audio" in {f.name for f in fields(ItemRecord)}
    g = torch.Generator().manual_seed(seed)
    manifest = Manifest(model={"text_width": text_width}, dataset={"trigger": ""})
    for i in range(items):
        video, text = torch.randn(video_shape, generator=g), torch.randn(1, text_tokens, text_width, generator=g)
        latent_rel, text_rel = f"latents/clip_{i}.safetensors", f"text/clip_{i}.safetensors"
        latent = save_tensors(folder / latent_rel, {"video": video})
        caption = save_tensors(folder / text_rel, {"text": text})
        extra: dict[str, Any] = {}
        if audio_ok:
            audio = torch.randn(audio_shape, generator=g)
            audio_rel = f"audio/clip_{i}.safetensors"
            info = save_tensors(folder / audio_rel, {"audio": audio})
            extra = dict(audio_vae="bench", audio=audio_rel, audio_shape=list(audio.shape), audio_bytes=info["bytes"],
                         audio_sha256=info["sha256"])
        manifest.items[f"clip_{i}"] = ItemRecord(
            id=f"clip_{i}", source=f"clip_{i}.mp4", source_size=0, source_mtime_ns=0, source_sha256="", prep={},
            caption=f"caption {i}", trigger="", frame_rate=25.0, vae="", text_encoder="",
            latent=latent_rel, latent_shape=list(video.shape), latent_bytes=latent["bytes"],
            latent_sha256=latent["sha256"], text=text_rel, text_shape=list(text.shape), text_bytes=caption["bytes"],
            text_sha256=caption["sha256"], **extra,
        )
    info = save_tensors(folder / "text/empty.safetensors", {"text": torch.zeros(1, 1, text_width)})
    manifest.empty_text = {"file": "text/empty.safetensors", "shape": [1, 1, text_width], **info}
    manifest.save(folder)
    return {"items": items, "audio_written": audio_ok}
