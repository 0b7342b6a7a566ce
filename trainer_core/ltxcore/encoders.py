"""Headless video encoder/decoder: ltx-core's LTX-2.x video VAE loaded from a single-file checkpoint.

Used by ``python -m trainer_core cache`` and the demo, where no ComfyUI is running. Only the VAE is read
from the checkpoint (not the 22B transformer). Latents are the normalized means, exactly what ComfyUI's VAE
returns for the same weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .model import read_checkpoint_config, require_ltx_core, split_checkpoint_keys
from ..cache.encoders import LATENT_CHANNELS, VIDEO_FAMILY, CacheError, vae_encoder_tensors, weights_identity

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
