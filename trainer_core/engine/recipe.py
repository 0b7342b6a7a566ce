"""The training recipe: how a batch becomes model inputs, targets and a loss (the reference's rectified flow).

``x_s = (1 - s) x0 + s eps``, target ``eps - x0``, MSE on the predicted velocity. Video and audio draw their own
sigma from their own token counts (the reference's ``flexible`` strategy). With probability ``first_frame_p`` a
clip's latent frame 0 stays clean, gets timestep 0 and is left out of the loss (image-to-video conditioning;
only when video is generated). A stream in ``condition`` mode (``engine.modes``) is passed clean at timestep 0
and sigma 0 with no loss, as the reference's ``flexible`` strategy does with ``is_generated: false``; audio in
``off`` mode is not passed at all. Each sample's loss is the mean over its loss tokens; the losses of the
generated streams are summed.

IC-LoRA (``recipe.reference_p``, ltx-trainer's ``reference`` condition): with that probability per batch (one
draw for the whole batch, as the reference does: it changes the sequence length) the clips' clean reference latents
go beside the video tokens at timestep 0 (``ModelInput.reference``; the backbone gives them their own positions,
spatially scaled by the reference_downscale_factor). The backbone returns the velocity of the target tokens only,
so the loss, and first-frame conditioning, concern the target alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backbone import ModelInput, TextContext
from ..config.training import RecipeSettings
from .modes import StreamModes
from .sigma import sample_sigmas


@dataclass(frozen=True)
class Targets:
    """Velocity targets and loss masks of the generated streams (None for a stream not in the loss)."""

    video: torch.Tensor | None  # [B, C, F, H, W] velocity target
    video_mask: torch.Tensor | None  # [B, F*H*W], 1 where the token is in the loss
    audio: torch.Tensor | None = None
    audio_mask: torch.Tensor | None = None


def _noised(x0: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    s = sigma.to(x0.device, x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise, noise - x0


def token_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-token squared error, [B, tokens]: channel-mean over video [B,C,F,H,W] or audio [B,C,T,M] latents."""
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)  # >= fp32
    err = (pred.to(dtype) - target.to(dtype)).pow(2)
    if err.ndim == 5:  # video: tokens are (f, h, w), features are channels
        return err.mean(dim=1).flatten(1)
    return err.mean(dim=(1, 3))  # audio [B, 8, T, 16]: one token per time step


def masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sample's loss tokens, then over the batch."""
    per_sample = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_sample.mean()


class FlowMatchingRecipe:
    """Text-to-video (+ audio), with either stream generated or conditioning, and optional first-frame conditioning."""

    def __init__(self, settings: RecipeSettings, modes: StreamModes | None = None) -> None:
        self.settings = settings
        # Without resolved modes (no data to resolve against): generate whatever is passed in.
        self.modes = modes or StreamModes(
            audio="generate" if settings.audio == "auto" else settings.audio, video=settings.video
        )

    def prepare(
        self,
        video: torch.Tensor,
        audio: torch.Tensor | None,
        text: TextContext,
        frame_rate: float,
        generator: torch.Generator,
        reference: torch.Tensor | None = None,
    ) -> tuple[ModelInput, Targets]:
        """Noise a batch of clean latents and build the model input and the loss targets.

        ``audio`` is ignored when audio is off; ``reference`` (IC-LoRA, ``[B, C, F_r, H/N, W/N]``) when the modes
        have no reference factor. Draw order from ``generator``: video sigma, video noise, first-frame draws
        (generated video only), audio sigma and noise (generated audio only), then the batch's reference draw
        (IC-LoRA batches with a reference only).
        """
        b, _, f, h, w = video.shape
        tokens, per_frame = f * h * w, h * w
        mode = self.settings.timestep_sampling
        if self.modes.audio == "off":
            audio = None
        if self.modes.video == "condition":
            if audio is None or self.modes.audio != "generate":
                raise ValueError("video is conditioning, so the batch needs audio latents to generate")
            sigma_v, noisy_v, target_v, mask_v = torch.zeros(b), video, None, None
            timesteps_v = torch.zeros(b, tokens)
        else:
            sigma_v = sample_sigmas(b, tokens, generator, mode)
            noisy_v, target_v = _noised(video, sigma_v, generator)
            timesteps_v = sigma_v.view(b, 1).expand(b, tokens).clone()
            mask_v = torch.ones(b, tokens)
            conditioned = torch.rand(b, generator=generator) < self.settings.first_frame_p
            if conditioned.any():
                cond = conditioned.to(video.device)
                noisy_v[:, :, 0] = torch.where(cond.view(b, 1, 1, 1), video[:, :, 0], noisy_v[:, :, 0])
                timesteps_v[conditioned, :per_frame] = 0.0
                mask_v[conditioned, :per_frame] = 0.0

        noisy_a = target_a = timesteps_a = mask_a = sigma_a = None
        if audio is not None:
            steps = audio.shape[2]
            if self.modes.audio == "generate":
                sigma_a = sample_sigmas(b, steps, generator, mode)
                noisy_a, target_a = _noised(audio, sigma_a, generator)
                mask_a = torch.ones(b, steps)
            else:
                sigma_a = torch.zeros(b)
                noisy_a = audio
            timesteps_a = sigma_a.view(b, 1).expand(b, steps).clone()

        factor, temporal = self.modes.reference_factor, self.modes.reference_temporal_factor
        if reference is not None and factor:
            if reference.shape[3] * factor != h or reference.shape[4] * factor != w:
                raise ValueError(
                    f"reference latent {tuple(reference.shape[2:])} is not the video latent {(f, h, w)} at 1/{factor} "
                    "of its height and width (reference_downscale_factor): cache the dataset again"
                )
            if (reference.shape[2] - 1) * temporal != f - 1:
                raise ValueError(
                    f"reference latent {tuple(reference.shape[2:])} does not have the video latent {(f, h, w)}'s "
                    f"frames subsampled by {temporal} (reference_temporal_scale_factor: {(f - 1) // temporal + 1} "
                    "latent frames): cache the dataset again"
                )
            if torch.rand((), generator=generator).item() >= self.settings.reference_p:
                reference = None
        else:
            reference = None

        device = video.device
        inp = ModelInput(
            video=noisy_v,
            video_timesteps=timesteps_v.to(device),
            video_sigma=sigma_v.to(device),
            text=text,
            frame_rate=frame_rate,
            audio=noisy_a,
            audio_timesteps=None if timesteps_a is None else timesteps_a.to(device),
            audio_sigma=None if sigma_a is None else sigma_a.to(device),
            reference=None if reference is None else reference.to(device, video.dtype),
            reference_factor=factor or 1,
            reference_temporal_factor=temporal,
        )
        mask_v = None if mask_v is None else mask_v.to(device)
        mask_a = None if mask_a is None else mask_a.to(device)
        return inp, Targets(target_v, mask_v, target_a, mask_a)

    @staticmethod
    def loss(
        pred_video: torch.Tensor, pred_audio: torch.Tensor | None, targets: Targets
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its detached parts (video, audio); tensors, so logging costs no host sync here."""
        parts = {}
        if targets.video is not None:
            parts["video"] = masked_mean(token_mse(pred_video, targets.video), targets.video_mask)
        if targets.audio is not None and pred_audio is not None:
            parts["audio"] = masked_mean(token_mse(pred_audio, targets.audio), targets.audio_mask)
        total = sum(parts.values())
        return total, {k: v.detach() for k, v in parts.items()}
