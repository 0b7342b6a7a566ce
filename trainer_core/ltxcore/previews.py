"""Headless previews and sweeps: the pack's small Euler sampler (``trainer_core.sampling``) on the ltx-core backbone,
decoded by the checkpoint's own video VAE, no ComfyUI.

``train`` renders its preview prompts every ``preview.every`` steps (as ltx-trainer's validation does) into
``<output_dir>/previews/<name>_step_NNNNN.mp4`` (one cell per prompt; a ``.png`` with the first, middle and last
frame beside it); the ``sweep`` command renders LoRA files x strengths x prompts x seeds with the same sampler.
Prompt text is encoded with the encoder the cache was made with: the stand-in when the cache used it, Gemma 3
(``--text-encoder``, freed before the transformer loads) otherwise; without prompt lines the first training
captions' cached features are used. The sampler's schedule is LTX's token-shifted one, not ComfyUI's
LTXVScheduler, so a headless preview resembles but does not equal the Train node's.

With sound: when the run generates audio (``recipe.audio`` resolved to generate) audio and video are sampled
together; when audio is its condition (``recipe.audio: condition``) preview i is conditioned on the audio latent of
the i-th training clip, held clean as training feeds it. The audio is decoded by the checkpoint's audio VAE and
vocoder (``audio_vae.*``, ``vocoder.*``) and the mp4 gets it as its sound (cells play in turn, as the Train node's
previews do). A checkpoint without them, or an ltx-core whose audio VAE cannot be imported, gives silent previews
and a log line saying why. The sweep command does the same for the LoRAs' own ``ltxlora.audio`` mode. When video is
the run's condition (``recipe.video: condition``, video-to-audio), preview i holds the cached video latent of the
i-th training clip the same way (clean at timestep 0, fitted to the preview's frames; its spatial size is the
clip's) and generates only the audio: the mp4 shows the clip's decoded frames with the generated sound.

IC-LoRA runs (``recipe.reference_p`` > 0): preview i is guided by the reference of the i-th training clip that has
one, as the Train node's previews are: the cached reference latent is decoded, resized to the preview's size / N
and encoded again (what LTXV Add Guide does with a guide clip), and every sampling step gets it clean, at
timestep 0, at the run's reference factors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..atomic import save_png
from ..backbone import Backbone, TextContext
from ..cache.encoders import AUDIO_LATENTS_PER_SECOND, AudioDecoder, CacheError, TextEncoder, VideoDecoder
from ..cache.standin_text import STANDIN_FAMILY, StandinTextEncoder
from ..config import ConfigError
from ..config.training import PreviewSettings, TrainConfig
from ..engine.data import first_latents
from ..engine.trainer import Callbacks, StepInfo, Trainer
from ..sampling import AudioPlan, sample_av
from ..sweep.grid import AudioTrack, GridLayout, grid_image, grid_video
from ..sweep.plan import SweepError, short

log = logging.getLogger(__name__)

MIN_SIDE = 64  # the VAE decoder's reflect padding needs two latent rows and columns (32 px each)


@dataclass
class PromptFeatures:
    """A prompt's label and its raw text-encoder features ``[1, T, D]`` (before the model's connectors)."""

    label: str
    features: torch.Tensor
    audio: torch.Tensor | None = None  # recipe.audio condition: a training clip's audio latent [8, T, 16]
    video: torch.Tensor | None = None  # recipe.video condition: a training clip's video latent [128, F', H', W']
    reference: torch.Tensor | None = None  # IC-LoRA: a training clip's reference at the preview's size [128, F_r, h, w]


@dataclass(frozen=True)
class PreviewSound:
    """What previews do with the audio stream: ``generate`` it or take each prompt's ``audio`` as its
    ``condition``; ``decoder`` (the checkpoint's audio VAE + vocoder) turns it into sound, None leaves it silent."""

    mode: Literal["generate", "condition"]
    decoder: AudioDecoder | None


def encode_prompts(
    lines: Sequence[str],
    cache_model: dict[str, Any],
    *,
    text_encoder: str | None,
    checkpoint: str,
    device: str,
    dtype: torch.dtype,
    what: str,
) -> list[PromptFeatures]:
    """``lines`` encoded like the training captions of the cache whose ``model`` record is ``cache_model``.

    A stand-in cache gets the stand-in (deterministic, no model); any other needs ``text_encoder`` (Gemma 3, freed
    afterwards). ``what`` names the setting in errors (``preview.prompts``, ``--prompts``).
    """
    if not lines:
        return []
    family, width = cache_model.get("text_family", ""), int(cache_model.get("text_width", 0))
    if text_encoder:
        from .gemma_text import load_text_encoder

        encoder: TextEncoder = load_text_encoder(text_encoder, checkpoint, device=device, dtype=dtype)
    elif family == STANDIN_FAMILY:
        encoder = StandinTextEncoder(width)
    else:
        raise ConfigError(
            f"{what} has prompt text, but the cache's captions were encoded with {family or 'an unknown encoder'}: "
            "give --text-encoder PATH (the Gemma 3 file or folder the cache was made with), or leave the prompts "
            "empty to use the first training captions"
        )
    try:
        out = [PromptFeatures(short(line), encoder.encode(line)) for line in lines]
    finally:
        close = getattr(encoder, "close", None)
        if close is not None:
            close()
    if width and out[0].features.shape[-1] != width:  # a sweep of LoRA files may have no cache to compare
        raise CacheError(f"{what}: the text encoder gives {out[0].features.shape[-1]} features, the cache {width}")
    return out


def training_captions(data: Any, count: int) -> list[PromptFeatures]:
    """The first ``count`` training captions' cached features (what previews show without prompt lines)."""
    out = []
    for i in range(min(count, len(data))):
        s = data[i]
        out.append(PromptFeatures(short(s.caption or s.key), s.text.float()))
    return out


def latent_shape(width: int, height: int, frames: int) -> tuple[int, int, int, int]:
    return (128, (frames - 1) // 8 + 1, height // 32, width // 32)


def audio_steps(frames: int, frame_rate: float) -> int:
    """Audio latent steps for ``frames`` video frames, as LTXV Empty Latent Audio counts them."""
    return round(frames / frame_rate * AUDIO_LATENTS_PER_SECOND)


@torch.no_grad()
def render_clip(
    backbone: Backbone,
    decoder: VideoDecoder,
    prompt: PromptFeatures,
    settings: PreviewSettings,
    seed: int,
    frame_rate: float,
    sound: PreviewSound | None = None,
    reference_factors: tuple[int, int] = (1, 1),
) -> tuple[torch.Tensor, AudioTrack | None]:
    """One clip ``[F, H, W, 3]`` sampled with the adapters currently attached and decoded by the checkpoint's VAE;
    with ``sound`` the audio stream is sampled beside it (or held at the prompt's conditioning audio) and decoded
    when ``sound.decoder`` is there; guided by the prompt's ``reference`` (IC-LoRA) at ``reference_factors``. A
    prompt's conditioning ``video`` is held clean instead of sampled, at its own height and width."""
    device = backbone.device
    text = backbone.prepare_text(prompt.features.to(device))
    negative = backbone.prepare_text(torch.zeros_like(prompt.features).to(device)) if settings.cfg > 1 else None
    plan = None
    if sound is not None:
        condition = prompt.audio if sound.mode == "condition" else None
        plan = AudioPlan(audio_steps(settings.frames, frame_rate), condition)
    shape = latent_shape(settings.width, settings.height, settings.frames)
    if prompt.video is not None:  # the clip is the video: its own size, only its length fitted to the preview's
        shape = (shape[0], shape[1], *prompt.video.shape[2:])
    latent, audio = sample_av(
        backbone, text, shape, frame_rate, settings.steps, torch.Generator().manual_seed(seed),
        guidance=settings.cfg, negative=negative, audio=plan,
        reference=None if prompt.reference is None else prompt.reference[None], reference_factors=reference_factors,
        video=prompt.video,
    )
    video = decoder.decode(latent[0])
    if audio is None or sound is None or sound.decoder is None:
        return video, None
    return video, AudioTrack(sound.decoder.decode(audio[0]), int(sound.decoder.sample_rate))


def render(
    backbone: Backbone,
    decoder: VideoDecoder,
    prompt: PromptFeatures,
    settings: PreviewSettings,
    seed: int,
    frame_rate: float,
) -> torch.Tensor:
    """One video-only clip ``[F, H, W, 3]`` (``render_clip`` without sound)."""
    return render_clip(backbone, decoder, prompt, settings, seed, frame_rate)[0]


def load_audio_decoder(checkpoint: str | Path, device: str, dtype: torch.dtype) -> tuple[AudioDecoder | None, str]:
    """The checkpoint's audio VAE decoder and vocoder, or None and why previews will be silent."""
    from .encoders import LtxCoreAudioVae

    try:
        return LtxCoreAudioVae(checkpoint, device=device, dtype=dtype, decoder=True), ""
    except CacheError as exc:  # no audio VAE in the file, or ltx-core's audio VAE cannot be imported
        return None, str(exc)


def attach_conditioning_audio(prompts: Sequence[PromptFeatures], data: Any) -> None:
    """Prompt i gets the audio latent of the i-th training clip that has one (cycling), to be conditioned on."""
    clips = first_latents(data, len(prompts), lambda s: s.audio)
    if not clips:
        raise CacheError("recipe.audio is condition, but no training clip has audio latents to condition on")
    for n, prompt in enumerate(prompts):
        prompt.audio = clips[n % len(clips)]


def attach_conditioning_video(prompts: Sequence[PromptFeatures], data: Any) -> None:
    """Prompt i gets the video latent of the i-th training clip (cycling), held as its video (video-to-audio)."""
    clips = first_latents(data, len(prompts), lambda s: s.video)
    for n, prompt in enumerate(prompts):
        prompt.video = clips[n % len(clips)]


def check_reference_size(settings: PreviewSettings, factor: int, temporal: int, what: str, fix: str) -> None:
    """``ConfigError`` unless an IC-LoRA clip of ``settings``' size divides by the reference factors: width and
    height by 32 x ``factor``, frames - 1 by 8 x ``temporal``. ``what`` names the clips, ``fix`` the settings."""
    if settings.width % (32 * factor) or settings.height % (32 * factor) or (settings.frames - 1) % (8 * temporal):
        raise ConfigError(
            f"{what} {settings.width}x{settings.height}x{settings.frames}: an IC-LoRA {what}'s width and height "
            f"must be multiples of 32 x reference_downscale_factor ({32 * factor}) and its frames - 1 a multiple of "
            f"8 x reference_temporal_scale_factor ({8 * temporal}); {fix}"
        )


def encode_reference(pixels: torch.Tensor, vae: Any, settings: PreviewSettings, factor: int,
                     temporal: int = 1) -> torch.Tensor:
    """A reference clip's frames ``[F, H, W, 3]`` in 0..1 (already kept 0, 1, 1+S, ... for ``temporal`` S) as the
    reference latent of a clip of ``settings``' size: cut to its (frames - 1) / S + 1 frames (a shorter reference:
    its whole 8n+1 frames), resized to width and height / ``factor`` (what LTXV Add Guide does with a guide clip)
    and encoded by ``vae``."""
    pixels = pixels[: (settings.frames - 1) // temporal + 1]
    pixels = pixels[: (pixels.shape[0] - 1) // 8 * 8 + 1]
    size = (settings.height // factor, settings.width // factor)
    resized = torch.nn.functional.interpolate(pixels.permute(0, 3, 1, 2), size=size, mode="bilinear",
                                              antialias=True, align_corners=False).clamp(0, 1)
    return vae.encode(resized.permute(0, 2, 3, 1))


def attach_references(prompts: Sequence[PromptFeatures], data: Any, vae: Any, settings: PreviewSettings,
                      factor: int, temporal: int = 1) -> None:
    """Prompt i gets the reference of the i-th training clip that has one (cycling), at the preview's size: decoded
    by ``vae`` and ``encode_reference``d. ``ConfigError`` when the preview size does not divide by the factors."""
    check_reference_size(settings, factor, temporal, "preview", "change preview.width/height/frames")
    latents = first_latents(data, len(prompts), lambda s: s.reference)
    if not latents:
        raise CacheError("recipe.reference_p > 0, but no training clip has a reference latent to guide previews")
    clips = [encode_reference(vae.decode(latent), vae, settings, factor, temporal) for latent in latents]
    for n, prompt in enumerate(prompts):
        prompt.reference = clips[n % len(clips)]


def preview_sound(mode: str, has_audio: bool, checkpoint: str | Path, device: str, dtype: torch.dtype,
                  what: str) -> PreviewSound | None:
    """``PreviewSound`` for an audio ``mode`` (generate or condition) on a model with the audio stream, else None.
    Logs when the sound cannot be decoded; ``what`` names the previews in that line."""
    if mode not in ("generate", "condition") or not has_audio:
        return None
    decoder, why = load_audio_decoder(checkpoint, device, dtype)
    if decoder is None:
        log.warning("%s are silent: the audio cannot be decoded (%s)", what, why)
    return PreviewSound("generate" if mode == "generate" else "condition", decoder)


def save_grid(videos: Sequence[torch.Tensor], layout: GridLayout, path: Path, fps: float,
              audio: Sequence[AudioTrack] | None = None) -> Path:
    """``path`` (.mp4, with one sound per cell played in turn when ``audio`` is given) and the still grid (.png)."""
    save_png(grid_image(videos, layout), path.with_suffix(".png"))
    grid_video(videos, layout, path.with_suffix(".mp4"), fps=fps, audio=audio)
    return path.with_suffix(".mp4")


@dataclass
class HeadlessPreviews:
    """Renders ``prompts`` every ``settings.every`` steps of ``trainer`` (an ``on_step`` callback)."""

    trainer: Trainer
    decoder: VideoDecoder
    settings: PreviewSettings
    prompts: list[PromptFeatures]
    folder: Path
    name: str
    frame_rate: float
    sound: PreviewSound | None = None
    saved: list[Path] = field(default_factory=list)
    reference_factors: tuple[int, int] = (1, 1)  # IC-LoRA: (spatial N, temporal S) of the run

    def on_step(self, info: StepInfo) -> None:
        if self.settings.every > 0 and info.step % self.settings.every == 0:
            self.render(info.step)

    def render(self, step: int) -> Path:
        adapters, transformer = self.trainer.adapters, self.trainer.backbone.transformer
        previous = adapters.training, transformer.training
        # No LoRA dropout, no checkpointing; the sampler draws from its own seeded generator, not training's RNGs.
        adapters.eval()
        transformer.eval()
        try:
            clips = [render_clip(self.trainer.backbone, self.decoder, p, self.settings, self.settings.seed,
                                 self.frame_rate, self.sound, self.reference_factors) for p in self.prompts]
        finally:
            adapters.train(previous[0])
            transformer.train(previous[1])
        videos = [video for video, _ in clips]
        sounds = [sound for _, sound in clips]
        audio = None if any(s is None for s in sounds) else [s for s in sounds if s is not None]
        layout = GridLayout(len(videos), [p.label for p in self.prompts])
        path = save_grid(videos, layout, self.folder / f"{self.name}_step_{step:05d}.mp4", self.frame_rate, audio)
        self.saved.append(path)
        log.info("preview saved: %s", path)
        return path


def preview_prompts(cfg: TrainConfig, data: Any, text_encoder: str | None) -> list[PromptFeatures]:
    """What ``train`` previews: ``preview.prompts`` (up to ``preview.count``) encoded like the cache's captions,
    else the first training captions; nothing when ``preview.every`` is 0. Run before the transformer loads."""
    if cfg.preview.every == 0:
        return []
    if min(cfg.preview.width, cfg.preview.height) < MIN_SIDE:
        raise ConfigError(
            f"preview.width x preview.height is {cfg.preview.width} x {cfg.preview.height}; headless previews are "
            f"decoded by the checkpoint's VAE, which needs at least {MIN_SIDE} pixels a side: raise them to {MIN_SIDE}"
        )
    lines = [line.strip() for line in cfg.preview.prompts.splitlines() if line.strip()][: cfg.preview.count]
    if not lines:
        return training_captions(data, cfg.preview.count)
    dtype = torch.float32 if cfg.model.device == "cpu" else torch.bfloat16
    return encode_prompts(lines, data.model, text_encoder=text_encoder, checkpoint=cfg.model.checkpoint,
                          device=cfg.model.device, dtype=dtype, what="preview.prompts")


def attach_previews(callbacks: Callbacks, trainer: Trainer, prompts: list[PromptFeatures]) -> HeadlessPreviews:
    """Load the checkpoint's VAE decoder (and, for an audio run, its audio decoder) and chain a
    ``HeadlessPreviews`` after ``callbacks.on_step``."""
    from .encoders import LtxCoreVae

    cfg = trainer.cfg
    dtype = torch.float32 if cfg.model.device == "cpu" else torch.bfloat16
    decoder = LtxCoreVae(cfg.model.checkpoint, device=cfg.model.device, dtype=dtype)
    sound = preview_sound(trainer.modes.audio, trainer.backbone.has_audio, cfg.model.checkpoint, cfg.model.device,
                          dtype, "previews")
    if sound is not None and sound.mode == "condition":
        attach_conditioning_audio(prompts, trainer.data)
    if trainer.modes.video == "condition":
        attach_conditioning_video(prompts, trainer.data)
        log.info("previews hold the training clips' video and generate the audio (recipe.video condition)")
    factors = (trainer.modes.reference_factor, trainer.modes.reference_temporal_factor)
    if factors[0]:
        attach_references(prompts, trainer.data, decoder, cfg.preview, *factors)
        log.info("previews are guided by the training clips' references (reference_downscale_factor %d)", factors[0])
    runner = HeadlessPreviews(trainer, decoder, cfg.preview, prompts, Path(cfg.output_dir) / "previews", cfg.name,
                              float(trainer.data.frame_rate_of(0)), sound, reference_factors=(factors[0] or 1,
                                                                                              factors[1]))
    callbacks.add_on_step(runner.on_step)
    return runner


@contextmanager
def lora_applied(backbone: Backbone, lora: Path, strength: float) -> Iterator[None]:
    """``lora`` (any layout ``lorafile`` reads) hooked into ``backbone``'s layers at ``strength`` for the block:
    ``y = W x + strength * scale * up(down(x))`` per module with the file's own rank and alpha; the model's weights
    are never changed. ``SweepError`` names layers the backbone lacks or whose shapes differ."""
    from ..lorafile.layouts import parse_lora
    from ..lorafile.read import read_lora_file

    tensors, _ = read_lora_file(lora)
    targets = backbone.lora_targets()
    parsed = parse_lora(tensors, targets)
    missing = sorted(set(parsed.modules) - set(targets))
    shapes = {n: (m.up.shape[0], m.down.shape[1]) for n, m in parsed.modules.items()}
    wrong = sorted(n for n, shape in shapes.items() if n in targets and shape != tuple(targets[n].weight.shape))
    if missing or wrong:
        raise SweepError(
            f"{lora.name} does not fit {len(missing) + len(wrong)} layers of this checkpoint (missing: "
            f"{missing[:3]}, other shapes: {wrong[:3]}); sweep it with the checkpoint it was trained on"
        )

    def hook(down: torch.Tensor, up: torch.Tensor, scale: float):
        def add(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            return output + (strength * scale) * torch.nn.functional.linear(
                torch.nn.functional.linear(x, down.to(x.dtype)), up.to(x.dtype))
        return add

    device = backbone.device
    handles = [
        targets[name].register_forward_hook(hook(m.down.float().flatten(1).to(device),
                                                 m.up.float().flatten(1).to(device), m.scale))
        for name, m in parsed.modules.items()
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
