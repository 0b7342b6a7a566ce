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

With sound: when the run generates audio (``recipe.audio`` resolved to generate) and the Train node has an
``audio_vae`` (stock *Load LTXV Audio VAE*), the preview samples audio and video together as the stock graph does
(``LTXVEmptyLatentAudio`` + ``LTXVConcatAVLatent`` -> sampler -> ``LTXVSeparateAVLatent`` ->
``LTXVAudioVAEDecode``, those nodes' own code) and the mp4 gets the decoded audio track. When audio is the run's
condition (``recipe.audio: condition``), preview i is conditioned on the cached audio latent of the i-th training
clip instead of an empty one: fitted to the preview's length (cut, or a tail zero-padded to be generated, as Concat
AV Latent fits a clip) with a zero noise mask over the clip's part, so the sampler keeps it clean at timestep 0 (as
training feeds it) and the mp4 carries the sound the video was conditioned on. The mirror case, video as the
condition (``recipe.video: condition``, video-to-audio), holds the i-th training clip's cached video latent the same
way (fitted to the preview's frames, zero noise mask, at the clip's own height and width) and generates only the
audio: the mp4 shows the clip's decoded frames with the generated sound.

IC-LoRA runs (``recipe.reference_p`` > 0): preview i is guided by the reference clip of the i-th training clip that
has one, as the stock graph guides a generation: the reference latent decoded by the Train node's VAE ->
``LTXVAddGuide`` (frame 0, strength 1, the run's reference_downscale_factor) on the video latent -> sampler ->
``LTXVCropGuides``, those nodes' own code. Without a VAE to decode the reference, previews are unguided (logged).
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
from ..engine.data import TrainingData, first_latents
from ..engine.trainer import Callbacks, StepInfo, Trainer
from ..sweep.grid import AudioTrack, GridLayout, as_audio, as_video, grid_image, grid_video
from ..sweep.plan import short

log = logging.getLogger(__name__)

LTX_SCHEDULER = {"max_shift": 2.05, "base_shift": 0.95, "stretch": True, "terminal": 0.1}  # LTXVScheduler defaults
DEFAULT_FRAME_RATE = 25.0  # what ComfyUI's LTX-AV model assumes when the conditioning has no frame_rate


@dataclass
class PreviewPrompt:
    label: str
    conditioning: list
    reference: torch.Tensor | None = None  # IC-LoRA: a training clip's reference latent [1, 128, F', H'/N, W'/N]
    audio: torch.Tensor | None = None  # recipe.audio condition: a training clip's audio latent [8, T, 16]
    video: torch.Tensor | None = None  # recipe.video condition: a training clip's video latent [128, F', H', W']


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


def frame_rate(prompt: PreviewPrompt) -> float:
    """The frame rate the model samples ``prompt`` at (its conditioning's, as LTXVConditioning sets it)."""
    return float(prompt.conditioning[0][1].get("frame_rate", DEFAULT_FRAME_RATE))


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


def sample_preview(
    model: Any, prompt: PreviewPrompt, settings: PreviewSettings, audio_vae: Any = None, *, vae: Any = None,
    reference_factor: int = 1,
) -> torch.Tensor:
    """One preview latent ``[1, 128, F', H', W']`` from ComfyUI's sampler on ``model`` (a MODEL); with ``audio_vae``
    a joint audio+video latent (ComfyUI's NestedTensor), built by the stock LTXV audio latent nodes. A prompt with a
    ``reference`` is guided by it (decoded with ``vae``) as the stock IC-LoRA graph does, guide frames cropped; a
    prompt's conditioning ``audio`` or ``video`` is held clean (zero noise mask) while the other stream is sampled."""
    import comfy.sample
    import comfy.samplers
    from comfy_extras.nodes_lt import LTXVAddGuide, LTXVCropGuides

    frames = (settings.frames - 1) // 8 + 1
    size = (settings.height // 32, settings.width // 32) if prompt.video is None else tuple(prompt.video.shape[2:])
    video = empty = comfy.sample.fix_empty_latent_channels(model, torch.zeros([1, 128, frames, *size]), 32)
    positive = prompt.conditioning
    negative = [[torch.zeros_like(c[0]), dict(c[1])] for c in positive] if settings.cfg > 1 else positive
    noise_mask = None
    if prompt.video is not None:  # video-to-audio: the clip is the video, only its length fitted to the preview's
        video, noise_mask = held_latent(prompt.video, empty)
    if prompt.reference is not None:
        # The reference clip as far as the preview lasts, in pixels, for the stock node to resize and encode.
        image = vae.decode(prompt.reference[:, :, :frames])[0]
        parameters = {"reference_downscale_factor": reference_factor}
        positive, negative, guided = LTXVAddGuide.execute(
            positive, negative, vae, {"samples": video}, image, 0, 1.0, iclora_parameters=parameters
        ).result
        video, noise_mask = guided["samples"], guided["noise_mask"]
    latent = video
    if audio_vae is not None:
        from comfy_extras.nodes_lt import LTXVConcatAVLatent
        from comfy_extras.nodes_lt_audio import LTXVEmptyLatentAudio

        audio = LTXVEmptyLatentAudio.execute(settings.frames, frame_rate(prompt), 1, audio_vae).result[0]
        if prompt.audio is not None:
            samples, mask = held_latent(prompt.audio, audio["samples"])
            audio = {"samples": samples, "noise_mask": mask, "type": "audio"}
        joint = LTXVConcatAVLatent.execute({"samples": video, "noise_mask": noise_mask}, audio).result[0]
        latent, noise_mask = joint["samples"], joint.get("noise_mask")
    noise = comfy.sample.prepare_noise(latent, settings.seed)
    sampler = comfy.samplers.sampler_object("euler")
    sampled = comfy.sample.sample_custom(
        model, noise, settings.cfg, sampler, ltx_sigmas(settings.steps, empty), positive, negative, latent,
        noise_mask=noise_mask, disable_pbar=True, seed=settings.seed,
    )
    if prompt.reference is None:
        return sampled
    if audio_vae is not None:
        from comfy_extras.nodes_lt import LTXVConcatAVLatent, LTXVSeparateAVLatent

        guided_video, audio = LTXVSeparateAVLatent.execute({"samples": sampled}).result
        cropped = LTXVCropGuides.execute(positive, negative, guided_video).result[2]
        return LTXVConcatAVLatent.execute(cropped, audio).result[0]["samples"]
    return LTXVCropGuides.execute(positive, negative, {"samples": sampled}).result[2]["samples"]


def held_latent(clip: torch.Tensor, empty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples and noise mask shaped like ``empty`` ``[1, C, L, ...]`` holding ``clip`` ``[C, L_c, ...]`` (an audio
    latent ``[8, T, 16]`` or a video latent ``[128, F', H', W']``): cut to L, or zero-padded with the tail left to
    be generated, as Concat AV Latent fits a clip; the mask is 0 (keep clean) over the clip's steps."""
    if clip.shape[0] != empty.shape[1] or clip.shape[2:] != empty.shape[3:]:
        raise ValueError(f"a conditioning latent {tuple(clip.shape)} does not fit the preview's latent "
                         f"{tuple(empty.shape[1:])} (only its length may differ)")
    kept = min(clip.shape[1], empty.shape[2])
    samples = torch.zeros_like(empty)
    samples[0, :, :kept] = clip[:, :kept].to(samples)
    mask = torch.ones_like(empty)
    mask[:, :, :kept] = 0.0
    return samples, mask


def decode_audio(latent: torch.Tensor, audio_vae: Any) -> tuple[torch.Tensor, AudioTrack]:
    """A joint latent split into its video latent and its decoded sound (stock Separate AV / Audio VAE Decode)."""
    from comfy_extras.nodes_lt import LTXVSeparateAVLatent
    from comfy_extras.nodes_lt_audio import LTXVAudioVAEDecode

    video, audio = LTXVSeparateAVLatent.execute({"samples": latent}).result
    return video["samples"], as_audio(LTXVAudioVAEDecode.execute(audio, audio_vae).result[0])


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
    audio_vae: Any = None  # set only when the run generates audio: the previews then have sound
    saved: list[Path] = field(default_factory=list)

    def on_step(self, info: StepInfo) -> None:
        if self.settings.every > 0 and info.step % self.settings.every == 0:
            self.render(info.step)

    def render(self, step: int) -> Path:
        """Sample every preview prompt with the current adapters; save and show the result."""

        with sampling_mode(self.trainer):
            latents = [
                sample_preview(self.model, p, self.settings, self.audio_vae, vae=self.vae,
                               reference_factor=self.trainer.modes.reference_factor or 1)
                for p in self.prompts
            ]
            sounds: list[AudioTrack] | None = None
            if self.audio_vae is not None:
                split = [decode_audio(x, self.audio_vae) for x in latents]
                latents, sounds = [video for video, _ in split], [sound for _, sound in split]
            videos = [as_video(self.vae.decode(x)) if self.vae is not None else latent_rgb(self.model, x)
                      for x in latents]
        # Sampling loads with ComfyUI's inference reserve (and the optimizer state was on the CPU), a VAE decode
        # may push weights off the device: load again with training's reserve, now that its state is back.
        self.trainer.backbone.load()
        layout = GridLayout(len(videos), [p.label for p in self.prompts])
        still = grid_image(videos, layout)
        path = self.folder / f"{self.name}_step_{step:05d}.png"
        save_png(still, path)
        grid_video(videos, layout, path.with_suffix(".mp4"), fps=frame_rate(self.prompts[0]), audio=sounds)
        self.saved.append(path)
        log.info("preview saved: %s", path)
        if self.show is not None:
            self.show(step, still)
        return path


def _attach_references(prompts: list[PreviewPrompt], data: TrainingData) -> None:
    """Preview i gets the reference latent of the i-th training clip that has one (cycling over them)."""
    references = first_latents(data, len(prompts), lambda s: s.reference)
    for n, prompt in enumerate(prompts):
        prompt.reference = references[n % len(references)][None]


def _attach_audio(prompts: list[PreviewPrompt], data: TrainingData) -> None:
    """Preview i is conditioned on the audio latent of the i-th training clip that has one (cycling over them)."""
    clips = first_latents(data, len(prompts), lambda s: s.audio)
    for n, prompt in enumerate(prompts):
        prompt.audio = clips[n % len(clips)] if clips else None


def _attach_video(prompts: list[PreviewPrompt], data: TrainingData) -> None:
    """Preview i holds the video latent of the i-th training clip (cycling over them) and generates the audio."""
    clips = first_latents(data, len(prompts), lambda s: s.video)
    for n, prompt in enumerate(prompts):
        prompt.video = clips[n % len(clips)]


def attach_previews(
    callbacks: Callbacks,
    trainer: Trainer,
    model: Any,
    data: TrainingData,
    cfg: TrainConfig,
    *,
    vae: Any = None,
    clip: Any = None,
    audio_vae: Any = None,
    show: Callable[[int, Image.Image], None] | None = None,
) -> PreviewRunner:
    """Chain a ``PreviewRunner`` after ``callbacks.on_step`` (previews are rendered after the step's callback)."""
    has_audio = trainer.modes.audio in ("generate", "condition")
    if has_audio and audio_vae is None:
        log.info("previews are silent: connect Load LTXV Audio VAE to the Train node's audio_vae to hear them")
    elif audio_vae is not None and not has_audio:
        log.info("previews are video only: this run has no audio (recipe.audio %s)", trainer.modes.audio)
    prompts = preview_prompts(cfg.preview, data, clip)
    if trainer.modes.audio == "condition" and audio_vae is not None and cfg.preview.every > 0:
        _attach_audio(prompts, data)
    if trainer.modes.video == "condition" and cfg.preview.every > 0:
        # Video-to-audio never learned to generate video: show the clips' own, with or without sound.
        _attach_video(prompts, data)
        log.info("previews hold the training clips' video and generate the audio (recipe.video condition)")
    if trainer.modes.reference_factor and cfg.preview.every > 0:
        if vae is None:
            log.info("IC-LoRA previews are unguided: connect the VAE to the Train node to guide them with the "
                     "training clips' reference clips")
        else:
            _attach_references(prompts, data)
    runner = PreviewRunner(
        trainer, model, cfg.preview, prompts, Path(cfg.output_dir) / "previews", cfg.name, vae, show,
        audio_vae if has_audio else None,
    )
    callbacks.add_on_step(runner.on_step)
    return runner
