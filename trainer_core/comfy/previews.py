"""In-training previews rendered with ComfyUI's own sampling path, on the model being trained.

Every ``preview.every`` steps a short low-resolution video is sampled from the MODEL being trained with
``comfy.sample.sample_custom``: Euler with the LTX scheduler's sigmas (``LTXVScheduler``, stretched to its
terminal), video-only latent as ``EmptyLTXVLatentVideo`` makes, noise from ``comfy.sample.prepare_noise``,
ComfyUI's stock blocks and inference kernels. The LoRA enters through the adapter hooks that training already
attached (``W x + s B A x`` per layer), so the preview is what ComfyUI's LoRA loader + sampler give for that
checkpoint (they merge ``W + s B A`` instead: equal up to rounding, tested) without ComfyUI patching and backing
up ~16 GB of attention weights per preview at full size. (The reference trainer's previews use another shift.)

While sampling, the training state is held aside and then restored exactly:
- the RNG streams (torch CPU and CUDA, Python, NumPy): ``prepare_noise`` reseeds torch's global generator;
- the adapters are in eval mode (no LoRA dropout) and run without autograd;
- ``comfy.model_management.in_training`` is cleared, so sampling uses ComfyUI's inference kernels;
- optimizer state on a GPU is moved to the CPU and back, so sampling fits wherever training fits.
The same seed therefore gives the same loss sequence with and without previews (tested).

Previews are saved beside the checkpoints (``previews/<name>_step_NNNNN.png`` with the first, middle and last
frame per prompt, and ``.mp4``) and shown on the Train node through the progress bar's preview image.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..atomic import save_png
from ..config.training import PreviewSettings, TrainConfig
from ..engine.data import TrainingData
from ..engine.trainer import Callbacks, StepInfo, Trainer
from ..sweep.grid import GridLayout, as_video, grid_image, grid_video
from ..sweep.plan import short

log = logging.getLogger(__name__)

LTX_SCHEDULER = {"max_shift": 2.05, "base_shift": 0.95, "stretch": True, "terminal": 0.1}  # LTXVScheduler defaults


@dataclass
class PreviewPrompt:
    label: str
    conditioning: list


def preview_prompts(settings: PreviewSettings, data: TrainingData, clip: Any = None) -> list[PreviewPrompt]:
    """The prompt lines encoded with ``clip``, or else the first training captions' encoder outputs."""
    lines = [line.strip() for line in settings.prompts.splitlines() if line.strip()][: settings.count]
    if lines:
        if clip is None:
            raise ValueError(
                "preview.prompts has text but the Train node has no clip connected to encode it: connect the LTX "
                "text encoder (CLIP) or leave preview.prompts empty to preview the first training captions"
            )
        return [PreviewPrompt(short(t), clip.encode_from_tokens_scheduled(clip.tokenize(t))) for t in lines]
    out = []
    for i in range(min(settings.count, len(data))):
        s = data[i]
        extra = {"unprocessed_ltxav_embeds": True, "frame_rate": float(s.frame_rate)}
        out.append(PreviewPrompt(short(s.caption or s.key), [[s.text.float().clone(), extra]]))
    return out


@contextmanager
def rng_preserved() -> Iterator[None]:
    """Restore every RNG stream sampling may touch (torch CPU/CUDA, Python, NumPy) on exit."""
    cpu, py, npy = torch.get_rng_state(), random.getstate(), np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(py)
        np.random.set_state(npy)


@contextmanager
def optimizer_state_offloaded(optimizer: torch.optim.Optimizer) -> Iterator[int]:
    """Move optimizer state tensors that live on a GPU to the CPU for the block, then back (exact copies)."""
    moved: list[tuple[dict, str, torch.device]] = []
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.device.type != "cpu":
                moved.append((state, key, value.device))
                state[key] = value.to("cpu")
    try:
        yield sum(state[key].numel() * state[key].element_size() for state, key, _ in moved)
    finally:
        for state, key, device in moved:
            state[key] = state[key].to(device)


@contextmanager
def sampling_mode(trainer: Trainer) -> Iterator[None]:
    """Hold the training state aside while ComfyUI samples (see the module docstring); restore it exactly."""
    import comfy.model_management as mm

    adapters = trainer.adapters
    previous_mode, previous_flag = adapters.training, mm.in_training
    trainer.backbone.release_streamed_blocks()  # the sampler loads the model its own way
    with rng_preserved(), optimizer_state_offloaded(trainer.optimizer) as offloaded:
        if offloaded:
            log.info("previews: optimizer state (%.1f MiB) moved to the CPU while sampling", offloaded / 2**20)
        try:
            adapters.eval()
            mm.in_training = False
            with torch.no_grad():
                yield
        finally:
            adapters.train(previous_mode)
            mm.in_training = previous_flag


def ltx_sigmas(steps: int, latent: torch.Tensor) -> torch.Tensor:
    """The LTX scheduler's sigmas, computed by ComfyUI's own LTXVScheduler node."""
    from comfy_extras.nodes_lt import LTXVScheduler

    return LTXVScheduler.execute(steps, latent={"samples": latent}, **LTX_SCHEDULER).args[0]


def sample_preview(model: Any, prompt: PreviewPrompt, settings: PreviewSettings) -> torch.Tensor:
    """One preview latent ``[1, 128, F', H', W']`` from ComfyUI's sampler on ``model`` (a MODEL)."""
    import comfy.sample
    import comfy.samplers

    shape = [1, 128, (settings.frames - 1) // 8 + 1, settings.height // 32, settings.width // 32]
    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros(shape), 32)
    noise = comfy.sample.prepare_noise(latent, settings.seed)
    positive = prompt.conditioning
    negative = [[torch.zeros_like(c[0]), dict(c[1])] for c in positive] if settings.cfg > 1 else positive
    sampler = comfy.samplers.sampler_object("euler")
    return comfy.sample.sample_custom(
        model, noise, settings.cfg, sampler, ltx_sigmas(settings.steps, latent), positive, negative, latent,
        disable_pbar=True, seed=settings.seed,
    )


def latent_rgb(model: Any, latent: torch.Tensor) -> torch.Tensor:
    """Without a VAE: ComfyUI's latent-to-RGB preview factors, frames ``[F', H', W', 3]`` upscaled 8x."""
    fmt = model.model.latent_format
    factors = torch.tensor(fmt.latent_rgb_factors, dtype=torch.float32)
    bias = torch.tensor(fmt.latent_rgb_factors_bias or [0.0, 0.0, 0.0], dtype=torch.float32)
    rgb = torch.einsum("cfhw,cr->fhwr", latent[0].float().cpu(), factors) + bias
    rgb = ((rgb + 1) / 2).clamp(0, 1).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(rgb, scale_factor=8, mode="nearest").permute(0, 2, 3, 1)


@dataclass
class PreviewRunner:
    """Renders, saves and shows previews every ``settings.every`` steps (an ``on_step`` callback)."""

    trainer: Trainer
    model: Any  # the MODEL (ModelPatcher) being trained
    settings: PreviewSettings
    prompts: list[PreviewPrompt]
    folder: Path
    name: str
    vae: Any = None
    show: Callable[[int, Image.Image], None] | None = None
    saved: list[Path] = field(default_factory=list)

    def on_step(self, info: StepInfo) -> None:
        if self.settings.every > 0 and info.step % self.settings.every == 0:
            self.render(info.step)

    def render(self, step: int) -> Path:
        """Sample every preview prompt with the current adapters; save and show the result."""

        with sampling_mode(self.trainer):
            latents = [sample_preview(self.model, p, self.settings) for p in self.prompts]
            videos = [as_video(self.vae.decode(x)) if self.vae is not None else latent_rgb(self.model, x)
                      for x in latents]
        # Sampling loads with ComfyUI's inference reserve (and the optimizer state was on the CPU), a VAE decode
        # may push weights off the device: load again with training's reserve, now that its state is back.
        self.trainer.backbone.load()
        layout = GridLayout(len(videos), [p.label for p in self.prompts])
        still = grid_image(videos, layout)
        path = self.folder / f"{self.name}_step_{step:05d}.png"
        save_png(still, path)
        grid_video(videos, layout, path.with_suffix(".mp4"), fps=24.0)
        self.saved.append(path)
        log.info("preview saved: %s", path)
        if self.show is not None:
            self.show(step, still)
        return path


def attach_previews(
    callbacks: Callbacks,
    trainer: Trainer,
    model: Any,
    data: TrainingData,
    cfg: TrainConfig,
    *,
    vae: Any = None,
    clip: Any = None,
    show: Callable[[int, Image.Image], None] | None = None,
) -> PreviewRunner:
    """Chain a ``PreviewRunner`` after ``callbacks.on_step`` (previews are rendered after the step's callback)."""
    runner = PreviewRunner(
        trainer, model, cfg.preview, preview_prompts(cfg.preview, data, clip), Path(cfg.output_dir) / "previews",
        cfg.name, vae, show,
    )
    first = callbacks.on_step

    def on_step(info: StepInfo) -> None:
        if first is not None:
            first(info)
        runner.on_step(info)

    callbacks.on_step = on_step
    return runner
