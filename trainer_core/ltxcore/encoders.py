"""Headless encoders: ltx-core's LTX-2.x video VAE and audio VAE loaded from a single-file checkpoint.

Used by ``python -m trainer_core cache`` and the demo, where no ComfyUI is running. Only the VAE is read
from the checkpoint (not the 22B transformer). Latents are the normalized means, exactly what ComfyUI's VAE
returns for the same weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .model import read_checkpoint_config, require_ltx_core, split_checkpoint_keys
from ..cache.audio_mel import log_mel
from ..cache.encoders import (
    AUDIO_FAMILY,
    AUDIO_SAMPLE_RATE,
    LATENT_CHANNELS,
    VIDEO_FAMILY,
    CacheError,
    audio_encoder_tensors,
    fit_audio_latent,
    vae_encoder_tensors,
    weights_identity,
)

logger = logging.getLogger(__name__)


def load_vae_modules(
    checkpoint: str | Path, *, decoder: bool, dtype: torch.dtype, device: torch.device
) -> dict[str, torch.nn.Module]:
    """ltx-core's video VAE encoder (and decoder) with the checkpoint's ``vae.*`` weights, nothing else."""
    from safetensors import safe_open

    require_ltx_core()
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator, VideoEncoderConfigurator

    path = Path(checkpoint)
    if not path.is_file():
        raise CacheError(f"checkpoint not found: {path}")
    config = read_checkpoint_config(path)
    if "vae" not in config:
        raise CacheError(f"{path}: the checkpoint has no video VAE ('vae' config section); use a full LTX-2.x file")
    with torch.device("meta"):
        modules: dict[str, torch.nn.Module] = {"vae_encoder": VideoEncoderConfigurator.from_config(config)}
        if decoder:
            modules["vae_decoder"] = VideoDecoderConfigurator.from_config(config)
    with safe_open(str(path), framework="pt") as f:
        plan = split_checkpoint_keys(f.keys(), modules, path)
        for name, module in modules.items():
            state = {k: f.get_tensor(ck).to(device=device, dtype=dtype) for k, ck in plan[name].items()}
            module.load_state_dict(state, strict=True, assign=True)
            module.eval().requires_grad_(False)
    return modules


class LtxCoreVae:
    """ltx-core's ``VideoEncoder``/``VideoDecoder`` of one checkpoint (implements VideoEncoder and VideoDecoder)."""

    family = VIDEO_FAMILY

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        tiled: bool = False,
        decoder: bool = True,
    ) -> None:
        self.device, self.dtype, self.tiled = torch.device(device), dtype, tiled
        modules = load_vae_modules(checkpoint, decoder=decoder, dtype=dtype, device=self.device)
        self.encoder = modules["vae_encoder"]
        self.decoder = modules.get("vae_decoder")
        if getattr(self.encoder, "latent_channels", LATENT_CHANNELS) != LATENT_CHANNELS:
            raise CacheError(f"{checkpoint}: the VAE is not an LTX-2.x video VAE (latent channels != 128)")
        state = {("per_channel_statistics." + k.removeprefix("per_channel_statistics.")
                  if k.startswith("per_channel_statistics.") else "encoder." + k): v
                 for k, v in self.encoder.state_dict().items()}
        self._identity = weights_identity(vae_encoder_tensors(state), samples=1024)

    def identity(self) -> str:
        return self._identity

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``[F, H, W, 3]`` 0..1 -> ``[128, F', H/32, W/32]`` (float32, CPU)."""
        x = (frames.to(self.device, self.dtype).permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0)
        if self.tiled:
            from ltx_core.model.video_vae.tiling import TilingConfig

            latent = self.encoder.tiled_encode(x, TilingConfig.default())
        else:
            latent = self.encoder(x)
        return latent[0].to("cpu", torch.float32)

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``[128, F', H', W']`` -> ``[F, H, W, 3]`` in 0..1 (float32, CPU)."""
        if self.decoder is None:
            raise CacheError("this VAE was loaded without its decoder; load it with decoder=True to preview")
        video = self.decoder(latent.to(self.device, self.dtype).unsqueeze(0))
        return ((video[0].float().clamp(-1, 1) + 1.0) / 2.0).permute(1, 2, 3, 0).to("cpu")


_AUDIO_STATS = "audio_vae.per_channel_statistics."
_AUDIO_PREFIXES = {"audio_encoder": "audio_vae.encoder.", "audio_decoder": "audio_vae.decoder.", "vocoder": "vocoder."}


def _import_audio_configurators():
    """ltx-core's audio VAE configurators; its ``ops`` module imports torchaudio (only its Python parts are used)."""
    require_ltx_core()
    try:
        from ltx_core.model.audio_vae import model_configurator
    except (ImportError, OSError) as exc:
        raise CacheError(
            "ltx-core's audio VAE cannot be imported, so the headless cache cannot encode audio "
            f"({type(exc).__name__}: {exc}). ltx_core.model.audio_vae imports torchaudio: install torchaudio "
            "matching your torch (pip install torchaudio), or cache inside ComfyUI, or pass --skip-audio."
        ) from exc
    return model_configurator


def load_audio_modules(
    checkpoint: str | Path, *, decoder: bool, dtype: torch.dtype, device: torch.device
) -> dict[str, torch.nn.Module]:
    """ltx-core's audio encoder (and decoder + vocoder) with the checkpoint's ``audio_vae.*``/``vocoder.*`` weights."""
    from safetensors import safe_open

    path = Path(checkpoint)
    if not path.is_file():
        raise CacheError(f"checkpoint not found: {path}")
    config = read_checkpoint_config(path)
    if "audio_vae" not in config or (decoder and "vocoder" not in config):
        raise CacheError(
            f"{path.name}: the checkpoint has no audio VAE ('audio_vae'/'vocoder' config sections); use a full "
            "LTX-2.x audio+video file, or pass --skip-audio to cache video only"
        )
    mc = _import_audio_configurators()
    with torch.device("meta"):
        modules: dict[str, torch.nn.Module] = {"audio_encoder": mc.AudioEncoderConfigurator.from_config(config)}
        if decoder:
            modules["audio_decoder"] = mc.AudioDecoderConfigurator.from_config(config)
            modules["vocoder"] = mc.VocoderConfigurator.from_config(config)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        for name, module in modules.items():
            prefix, state = _AUDIO_PREFIXES[name], {}
            for key in module.state_dict():
                ckpt_key = (_AUDIO_STATS + key.removeprefix("per_channel_statistics.")
                            if key.startswith("per_channel_statistics.") else prefix + key)
                if ckpt_key not in keys:
                    raise CacheError(f"{path.name}: {ckpt_key} is missing; the audio VAE in this file is incomplete")
                state[key] = f.get_tensor(ckpt_key).to(device=device, dtype=dtype)
            module.load_state_dict(state, strict=True, assign=True)
            module.eval().requires_grad_(False)
    return modules


class LtxCoreAudioVae:
    """ltx-core's audio encoder (+ decoder and vocoder) of one checkpoint: ``AudioEncoder`` and ``AudioDecoder``.

    The log-mel is the pack's torch one (``cache.audio_mel``), equal to ltx-core's and ComfyUI's torchaudio one.
    """

    family = AUDIO_FAMILY

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        decoder: bool = False,
    ) -> None:
        self.device, self.dtype = torch.device(device), dtype
        modules = load_audio_modules(checkpoint, decoder=decoder, dtype=dtype, device=self.device)
        self.encoder = modules["audio_encoder"]
        self.decoder, self.vocoder = modules.get("audio_decoder"), modules.get("vocoder")
        if getattr(self.encoder, "sample_rate", AUDIO_SAMPLE_RATE) != AUDIO_SAMPLE_RATE:
            raise CacheError(f"{checkpoint}: the audio VAE expects {self.encoder.sample_rate} Hz, not 16 kHz")
        state = {k if k.startswith("per_channel_statistics.") else "encoder." + k: v
                 for k, v in self.encoder.state_dict().items()}
        self._identity = weights_identity(audio_encoder_tensors(state), samples=1024)
        self.sample_rate = int(getattr(self.vocoder, "output_sampling_rate", 0) or 0)

    def identity(self) -> str:
        return self._identity

    @torch.inference_mode()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Stereo ``[2, samples]`` at 16 kHz -> normalized ``[8, round(samples / 640), 16]`` (float32, CPU)."""
        if waveform.ndim != 2 or waveform.shape[0] != 2:
            raise CacheError(f"audio waveform must be [2, samples] (stereo, 16 kHz), got {tuple(waveform.shape)}")
        mel = log_mel(waveform.to(self.device, torch.float32).unsqueeze(0))
        latent = self.encoder(mel.to(self.dtype))[0].to("cpu", torch.float32)
        return fit_audio_latent(latent, waveform.shape[-1], "ltx-core audio VAE")

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalized ``[8, T, 16]`` -> waveform ``[2, samples]`` at ``sample_rate`` (the vocoder's, 24 kHz+)."""
        if self.decoder is None or self.vocoder is None:
            raise CacheError("this audio VAE was loaded without its decoder; load it with decoder=True to preview")
        mel = self.decoder(latent.to(self.device, self.dtype).unsqueeze(0))
        return self.vocoder(mel)[0].to("cpu", torch.float32)
