"""The built-in end-to-end example: data -> cache -> train -> save -> reload -> strength sweep, on a tiny model.

Everything is made on the spot, nothing is downloaded: a tiny random-weight LTX-2.3 checkpoint with the real
architecture, synthetic clips with a distinctive moving pattern, a short sound and a trigger word, ltx-core's video
VAE for the latents and the stand-in text encoder for the captions (Gemma 3 12B only runs inside ComfyUI). It
exercises the same code paths as a real run, at a size that finishes in about a minute on two CPU cores. The demo's
checkpoint has no audio VAE, so it caches and trains video only; the clips' sound is there for the audio+video
workflow (``workflows/6_train_audio_video_lora.json``), which trains on these clips.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from .atomic import save_png
from .ltxcore.encoders import LtxCoreVae
from .cache.reader import CachedData
from .cache.standin_text import StandinTextEncoder, text_width_for
from .cache.writer import build_cache
from .config import parse_section
from .config.dataset import DatasetConfig
from .config.training import TrainConfig
from .dataset.loader import load_dataset
from .engine.trainer import Callbacks, Trainer
from .lora.adapter import LoraAdapters
from .lorafile.read import read_lora_file
from .ltxcore.backbone import LtxCoreBackbone
from .ltxcore.model import read_checkpoint_config
from .plots import loss_curve
from .progress import ProgressLine
from .sampling import sample_video
from .sweep.grid import GridLayout, grid_image
from .ltxcore.tiny import write_tiny_checkpoint

log = logging.getLogger(__name__)

TRIGGER = "zxqstyle"
SIZE, FRAMES = 64, 17
AUDIO_RATE = 16000  # the clips' sound; the cache resamples to the audio VAE's rate anyway
STRENGTHS = (0.0, 0.5, 1.0)


@dataclass
class DemoSummary:
    dataset_items: int
    excluded: int
    cached: int
    steps: int
    first_loss: float
    last_loss: float
    lora_path: Path
    loss_png: Path
    sweep_png: Path
    distances: dict[float, float]  # strength -> mean squared distance of the sample to the training latents
    seconds: float

    def text(self) -> str:
        dist = ", ".join(f"{s:g}: {d:.3f}" for s, d in self.distances.items())
        return (
            f"dataset: {self.dataset_items} items ({self.excluded} excluded), cached {self.cached}\n"
            f"trained {self.steps} steps, loss {self.first_loss:.4f} -> {self.last_loss:.4f} (mean of first/last 10)\n"
            f"LoRA: {self.lora_path}\n"
            f"loss curve: {self.loss_png}\nstrength sweep: {self.sweep_png}\n"
            f"distance of the trigger-prompt sample to the training latents by LoRA strength: {dist}\n"
            f"done in {self.seconds:.0f} s"
        )


def _pattern_frame(t: int, phase: float, rng: np.random.Generator) -> np.ndarray:
    """Diagonal orange stripes drifting over a dark background: what the LoRA should learn."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    stripes = (np.sin((x + y + 3 * t) / 5.0 + phase) > 0.3).astype(np.float32)
    img = np.stack([0.95 * stripes, 0.5 * stripes, 0.1 + 0.05 * stripes], axis=-1)
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _hum(seconds: float, pitch: float) -> np.ndarray:
    """A tone pulsing four times a second (the stripes' sound): mono float32 at ``AUDIO_RATE``."""
    t = np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
    return (0.4 * np.sin(2 * np.pi * pitch * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def _write_sound(container: av.container.OutputContainer, stream: av.audio.AudioStream, wave: np.ndarray) -> None:
    for start in range(0, len(wave), 1024):  # AAC's frame size
        frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_clips(folder: Path, count: int = 6, seed: int = 0) -> None:
    """``count`` mp4 clips (24 fps, 20 frames: trimmed to 17 = 8*2+1) with a short audio track (a pulsing tone,
    one pitch per clip) and ``.txt`` captions using the trigger."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subjects = ["a corridor", "a street", "a wall", "a field", "a room", "the sky"]
    for i in range(count):
        path = folder / f"clip_{i:02d}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=24)
            stream.width = stream.height = SIZE
            stream.pix_fmt = "yuv420p"
            sound = container.add_stream("aac", rate=AUDIO_RATE)
            for t in range(FRAMES + 3):
                frame = av.VideoFrame.from_ndarray(_pattern_frame(t, i * 0.7, rng), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
            _write_sound(container, sound, _hum((FRAMES + 3) / 24, 330.0 + 55.0 * i))
        (folder / f"clip_{i:02d}.txt").write_text(f"{subjects[i % len(subjects)]} in orange stripes", encoding="utf-8")


def _latent_rgb(latents: list[torch.Tensor], basis_from: torch.Tensor) -> list[torch.Tensor]:
    """Latents [C, F, H, W] as RGB frames [F, H, W, 3]: top-3 principal components of ``basis_from`` [N, C, F, H, W].

    The tiny VAE's decoder has random weights, so decoded pixels show noise; the latent view shows what moved.
    """
    flat = basis_from.movedim(1, -1).reshape(-1, basis_from.shape[1])  # one row per latent token [N*F*H*W, C]
    mean = flat.mean(0)
    _, _, v = torch.pca_lowrank(flat - mean, q=3, center=False)
    views = [torch.einsum("cfhw,ck->fhwk", x - mean.view(-1, 1, 1, 1), v) for x in latents]
    lo, hi = min(float(x.min()) for x in views), max(float(x.max()) for x in views)
    return [(x - lo) / (hi - lo + 1e-8) for x in views]


def run_demo(out: Path, steps: int = 200, seed: int = 0) -> DemoSummary:
    """Run the whole pipeline into ``out`` and return what it produced."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "model" / "tiny_ltx23.safetensors"
    if not ckpt.exists():
        write_tiny_checkpoint(ckpt, audio=True, seed=seed)
    write_clips(out / "dataset", seed=seed)

    dataset = load_dataset(
        DatasetConfig(path=str(out / "dataset"), trigger=TRIGGER, buckets=f"{SIZE}x{SIZE}x{FRAMES}")
    )
    log.info("dataset: %d items, %d excluded", len(dataset.items), len(dataset.excluded))
    vae = LtxCoreVae(ckpt)
    text_encoder = StandinTextEncoder(text_width_for(read_checkpoint_config(ckpt)))
    build_cache(dataset.items, out / "cache", vae, text_encoder, trigger=TRIGGER)
    data = CachedData(out / "cache")

    cfg = parse_section(
        TrainConfig,
        {
            "seed": seed,
            "name": "demo",
            "output_dir": str(out / "run"),
            "data": str(out / "cache"),
            "model": {"checkpoint": str(ckpt), "dtype": "float32", "device": "cpu"},
            "lora": {"rank": 8, "alpha": 8},
            "optimization": {"steps": steps, "learning_rate": 5e-3, "warmup_steps": min(10, steps // 4)},
            "checkpoints": {"every": max(1, steps // 2)},
            "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
        },
    )
    backbone = LtxCoreBackbone.from_checkpoint(ckpt, dtype=torch.float32, device="cpu")
    result = Trainer(backbone, data, cfg).train(Callbacks(on_step=ProgressLine()))
    loss_png = out / "loss.png"
    save_png(loss_curve(result.losses), loss_png)

    # Reload the saved file into fresh adapters: the sweep uses what was written to disk, not what is in memory.
    tensors, _ = read_lora_file(result.lora_path)
    available = backbone.lora_targets()
    targets = {name: available[name] for name in result.adapters.names}  # the run's layers (audio off: no audio)
    adapters = LoraAdapters(targets, cfg.lora.rank, cfg.lora.alpha)
    adapters.load_comfy_state_dict(tensors)
    text = backbone.prepare_text(text_encoder.encode(f"{TRIGGER} a corridor in orange stripes"))
    latent_shape = tuple(data[0].video.shape)
    mean_latent = torch.stack([data[i].video for i in range(len(data))]).mean(0)
    samples, distances = [], {}
    for strength in STRENGTHS:
        with adapters.attached(strength):
            latent = sample_video(backbone, text, latent_shape, 24.0, 10, torch.Generator().manual_seed(seed + 1))
        distances[strength] = float(((latent[0] - mean_latent) ** 2).mean())
        samples.append(latent[0])
    training = torch.stack([data[i].video for i in range(len(data))])
    views = _latent_rgb([mean_latent, *samples], training)
    decoded = [vae.decode(x) for x in (mean_latent, *samples)]
    rows = ["training (mean)", *(f"strength {s:g}" for s in STRENGTHS)]
    layout = GridLayout(
        columns=2,
        cell_labels=[f"{r}: {c}" for r in rows for c in ("latent", "decoded")],
        row_labels=rows,
        column_labels=["latent frames (top-3 PCA colours)", "decoded first/middle/last"],
    )
    sweep_png = out / "sweep.png"
    cells = [v for pair in zip(views, decoded, strict=True) for v in pair]
    save_png(grid_image(cells, layout, tile_height=96), sweep_png)
    k = min(10, len(result.losses))
    return DemoSummary(
        dataset_items=len(dataset.items),
        excluded=len(dataset.excluded),
        cached=len(data),
        steps=result.step,
        first_loss=float(np.mean(result.losses[:k])),
        last_loss=float(np.mean(result.losses[-k:])),
        lora_path=result.lora_path,
        loss_png=loss_png,
        sweep_png=sweep_png,
        distances=distances,
        seconds=time.perf_counter() - start,
    )
