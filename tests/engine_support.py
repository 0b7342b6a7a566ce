"""Tiny models and synthetic cached data for engine tests (real LTX-2.3 architecture, random weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer_core.cache.manifest import ItemRecord, Manifest
from trainer_core.cache.store import save_tensors
from trainer_core.config import parse_section
from trainer_core.config.training import TrainConfig
from trainer_core.engine.data import InMemoryData, Sample
from trainer_core.ltxcore.backbone import LtxCoreBackbone
from trainer_core.sampling import sample_video
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

TEXT_DIM = 64 + 32  # tiny video + audio cross-attention widths, as ComfyUI's LTX-2.3 encoder concatenates them
CONCEPT_SHAPE = (128, 2, 2, 2)  # latent of 64x64 pixels, 9 frames


def tiny_backbone(path: Path, dtype=torch.float32, audio: bool = True) -> LtxCoreBackbone:
    if not path.exists():
        write_tiny_checkpoint(path, audio=audio, seed=0)
    return LtxCoreBackbone.from_checkpoint(path, dtype=dtype, device="cpu")


def synthetic_data(
    n: int = 3, seed: int = 0, audio: bool = True, frames: int = 2, size: int = 2, reference_factor: int = 0,
    reference_temporal: int = 1,
) -> InMemoryData:
    """``n`` random clips; ``reference_factor`` N > 0 gives each an IC-LoRA reference latent of ``size // N`` sides
    and ``(frames - 1) // reference_temporal + 1`` latent frames."""
    g = torch.Generator().manual_seed(seed)
    ref_size = size // reference_factor if reference_factor else 0
    samples = [
        Sample(
            key=f"clip_{i}",
            video=torch.randn(128, frames, size, size, generator=g),
            text=torch.randn(1, 5 + i, TEXT_DIM, generator=g),
            frame_rate=24.0,
            audio=torch.randn(8, 6, 16, generator=g) if audio else None,
            caption=f"caption {i}",
            reference=torch.randn(128, (frames - 1) // reference_temporal + 1, ref_size, ref_size, generator=g)
            if reference_factor else None,
        )
        for i in range(n)
    ]
    return InMemoryData(
        samples, empty_text=torch.randn(1, 1, TEXT_DIM, generator=g), trigger="",
        reference_downscale_factor=reference_factor or 1, reference_temporal_scale_factor=reference_temporal,
    )


def config(tmp: Path, **overrides) -> TrainConfig:
    data = {
        "output_dir": str(tmp / "run"),
        "name": "t",
        "seed": 0,
        "lora": {"rank": 4, "alpha": 4},
        "optimization": {"steps": 6, "learning_rate": 1e-3},
        "checkpoints": {"every": 3},
        "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return parse_section(TrainConfig, data)


def concept_data(
    backbone, g: torch.Generator, pattern: torch.Tensor, trigger: torch.Tensor, prior_mean: torch.Tensor
) -> InMemoryData:
    """A concept to learn: 4 trigger captions -> ``pattern`` (+ noise), and 4 prior-preservation clips.

    A tiny random model barely looks at its text, so a LoRA trained only on trigger clips would shift every
    prompt alike; the prior clips (captions around ``prior_mean`` whose latents the base model itself sampled)
    teach it to leave other prompts alone, as users do against bleed. Draws from ``g`` in a fixed order.
    """
    clips = [
        Sample(f"trigger_{i}", pattern + 0.05 * torch.randn(CONCEPT_SHAPE, generator=g), trigger, 24.0)
        for i in range(4)
    ]
    for i in range(4):
        prior = torch.randn(1, 1024, TEXT_DIM, generator=g) + prior_mean
        with torch.no_grad():
            latent = sample_video(
                backbone, backbone.prepare_text(prior), CONCEPT_SHAPE, 24.0, 8, torch.Generator().manual_seed(500 + i)
            )[0]
        clips.append(Sample(f"prior_{i}", latent, prior, 24.0))
    return InMemoryData(clips, empty_text=torch.zeros(1, 1, TEXT_DIM))


def concept_config(tmp: Path) -> TrainConfig:
    """80 steps of rank-4 LoRA on the video self- and text attentions: enough to learn ``concept_data``."""
    targets = "attn1.to_q, attn1.to_k, attn1.to_v, attn1.to_out.0, attn2.to_q, attn2.to_k, attn2.to_v, attn2.to_out.0"
    return config(
        tmp,
        lora={"rank": 4, "alpha": 4, "targets": "custom", "custom_targets": targets},
        optimization={"steps": 80, "learning_rate": 3e-2, "scheduler": "constant"},
        checkpoints={"every": 1000},
    )


def write_cache(folder: Path, frame_rates: list[float], empty_text: bool = True, text_dim: int = TEXT_DIM) -> Path:
    """A latent cache as the cache step writes it (manifest + safetensors files), one clip per frame rate, without
    encoding media. ``empty_text=False``: no empty caption, as in an ltx-trainer import without a text encoder.
    ``text_dim``: the text encoder's width (the tiny LTX-2 checkpoint takes 64)."""
    g = torch.Generator().manual_seed(0)
    manifest = Manifest(model={"text_width": text_dim}, dataset={"trigger": ""})
    for i, fps in enumerate(frame_rates):
        video, text = torch.randn(CONCEPT_SHAPE, generator=g), torch.randn(1, 5, text_dim, generator=g)
        latent_rel, text_rel = f"latents/clip_{i}.safetensors", f"text/clip_{i}.safetensors"
        latent = save_tensors(folder / latent_rel, {"video": video})
        caption = save_tensors(folder / text_rel, {"text": text})
        manifest.items[f"clip_{i}"] = ItemRecord(
            id=f"clip_{i}", source=f"clip_{i}.mp4", source_size=0, source_mtime_ns=0, source_sha256="", prep={},
            caption=f"caption {i}", trigger="", frame_rate=fps, vae="", text_encoder="",
            latent=latent_rel, latent_shape=list(video.shape), latent_bytes=latent["bytes"],
            latent_sha256=latent["sha256"], text=text_rel, text_shape=list(text.shape), text_bytes=caption["bytes"],
            text_sha256=caption["sha256"],
        )
    if empty_text:
        info = save_tensors(folder / "text/empty.safetensors", {"text": torch.randn(1, 1, text_dim, generator=g)})
        manifest.empty_text = {"file": "text/empty.safetensors", "shape": [1, 1, text_dim], **info}
    manifest.save(folder)
    return folder


def write_precomputed(root: Path, names: list[str]) -> Path:
    """An ltx-trainer ``.precomputed`` folder (latents + padded conditions) sized for the tiny model (text 64 + 32)."""
    g = torch.Generator().manual_seed(0)
    for name in names:
        for sub in ("latents", "conditions"):
            (root / ".precomputed" / sub).mkdir(parents=True, exist_ok=True)
        torch.save({"latents": torch.randn(128, 2, 2, 2, generator=g), "num_frames": 2, "height": 2, "width": 2,
                    "fps": 24.0}, root / ".precomputed" / "latents" / f"{name}.pt")
        mask = torch.zeros(1024, dtype=torch.long)
        mask[-5:] = 1
        torch.save({"video_prompt_embeds": torch.randn(1024, 64, generator=g),
                    "audio_prompt_embeds": torch.randn(1024, 32, generator=g), "prompt_attention_mask": mask},
                   root / ".precomputed" / "conditions" / f"{name}.pt")
    return root
