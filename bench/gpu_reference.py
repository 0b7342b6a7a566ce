"""Lightricks' reference LoRA recipe, rebuilt as ltx-trainer runs it, for the benchmark's ratio.

ltx-core ``LTXModel`` + connectors in bf16, PEFT ``LoraConfig(r=32, alpha=32, to_k/to_q/to_v/to_out.0)`` with
fp32 adapters, ltx-core's own per-block checkpointing, the text connectors run live with autograd every step
(ltx-trainer never freezes them: their gradients are computed and kept), bf16 autocast around the transformer,
grad-norm clipping on the LoRA parameters, AdamW 1e-4 and LinearLR(1.0 -> 0.1). Noise and sigma come from our
recipe module, which implements the reference's flow-matching math (``trainer_core.engine.recipe``).
"""

from __future__ import annotations

import torch
from gpu_measure import StepTimer

from trainer_core.backbone import TextContext
from trainer_core.config.training import RecipeSettings
from trainer_core.engine.recipe import FlowMatchingRecipe
from trainer_core.ltxcore.backbone import LtxCoreBackbone

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


class ReferenceRecipe:
    """One ltx-trainer style LoRA run over an ``LtxCoreModel`` (the model is changed in place: PEFT layers)."""

    def __init__(self, model, rank: int = 32, seed: int = 0) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        self.backbone = LtxCoreBackbone(model)
        transformer = model.transformer
        transformer.requires_grad_(False)
        config = LoraConfig(
            r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, lora_dropout=0.0, init_lora_weights=True
        )
        inject_adapter_in_model(config, transformer)
        self.lora_params = [p for n, p in transformer.named_parameters() if "lora_" in n]
        for p in self.lora_params:
            p.data = p.data.float()  # PEFT keeps adapters in fp32 over a bf16 base (ltx-trainer's setting)
            p.requires_grad_(True)
        transformer.set_gradient_checkpointing(True)
        transformer.train()
        self.optimizer = torch.optim.AdamW(self.lora_params, lr=1e-4)
        self.scheduler = torch.optim.lr_scheduler.LinearLR(self.optimizer, 1.0, 0.1, total_iters=2000)
        self.recipe = FlowMatchingRecipe(RecipeSettings())
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def num_lora_layers(self) -> int:
        return len(self.lora_params) // 2

    def step(self, video: torch.Tensor, audio: torch.Tensor | None, text: torch.Tensor) -> torch.Tensor:
        """One optimizer step; the connectors run on ``text`` with autograd, as in ltx-trainer."""
        bb = self.backbone
        device = bb.device
        video_in, audio_in = bb._split_text(text)
        ctx = TextContext(
            bb._run_connector(bb.model.video_connector, video_in), bb._run_connector(bb.model.audio_connector, audio_in)
        )
        audio = None if audio is None else audio.to(device)
        inp, targets = self.recipe.prepare(video.to(device), audio, ctx, 25.0, self.generator)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            pred_v, pred_a = bb.velocity(inp)
        loss, _ = self.recipe.loss(pred_v, pred_a, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.lora_params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def run(
        self, steps: int, video: torch.Tensor, audio: torch.Tensor | None, text: torch.Tensor, timer: StepTimer
    ) -> None:
        timer.start()
        for _ in range(steps):
            loss = self.step(video[None], None if audio is None else audio[None], text)
            timer.step(float(loss))  # ltx-trainer logs the loss every step too
