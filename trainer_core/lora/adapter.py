"""Hook-based LoRA adapters.

Adapters are attached with forward hooks (``y = W x + strength * alpha/r * B A dropout(x)``) instead of
replacing modules, so they work on every Linear flavour a model uses (ComfyUI's quantized fp8 layers are not
``nn.Linear`` and PEFT skips them) and detaching restores the shared model exactly: nothing of the base model
is modified, wrapped or copied. Adapter weights are float32 and live in this module, not in the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..backbone import linear_dims
from ..lorafile.metadata import comfy_keys


class LoraAdapters(nn.Module):
    """One rank-``rank`` adapter per target module, in float32, B initialised to zero (output unchanged)."""

    def __init__(
        self,
        targets: dict[str, nn.Module],
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.names = sorted(targets)
        self.rank = rank
        self.alpha = float(alpha)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._targets = [targets[n] for n in self.names]
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        for module in self._targets:
            fan_in, fan_out = linear_dims(module)
            a = torch.empty(rank, fan_in, dtype=torch.float32)
            # PEFT's default init (kaiming-uniform with a=sqrt(5)), drawn from our generator for reproducibility.
            bound = 1.0 / math.sqrt(fan_in)
            a.uniform_(-bound, bound, generator=generator)
            self.lora_A.append(nn.Parameter(a))
            self.lora_B.append(nn.Parameter(torch.zeros(fan_out, rank, dtype=torch.float32)))
        self.strength = 1.0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _hook(self, index: int):
        a, b = self.lora_A[index], self.lora_B[index]

        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = self.dropout(args[0])
            if not torch.is_autocast_enabled(x.device.type):
                x = x.to(a.dtype)
            delta = (x @ a.t().to(x.dtype)) @ b.t().to(x.dtype)
            return output + (delta * (self.strength * self.scale)).to(output.dtype)

        return hook

    @contextmanager
    def attached(self, strength: float = 1.0) -> Iterator[LoraAdapters]:
        """Hook the adapters into their modules for the duration of the block; always detached afterwards."""
        previous, self.strength = self.strength, strength
        handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self._targets)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self.strength = previous

    def to_comfy_state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """ComfyUI LoRA keys: ``diffusion_model.<module>.lora_A.weight`` / ``.lora_B.weight`` / ``.alpha``."""
        out: dict[str, torch.Tensor] = {}
        for name, a, b in zip(self.names, self.lora_A, self.lora_B, strict=True):
            key_a, key_b, key_alpha = comfy_keys(name)
            out[key_a] = a.detach().to("cpu", dtype).contiguous()
            out[key_b] = b.detach().to("cpu", dtype).contiguous()
            out[key_alpha] = torch.tensor(self.alpha, dtype=torch.float32)
        return out

    @torch.no_grad()
    def load_comfy_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load weights saved by ``to_comfy_state_dict``; shapes and module names must match exactly."""
        expected = {k for n in self.names for k in comfy_keys(n)[:2]}
        present = {k for k in tensors if k.endswith((".lora_A.weight", ".lora_B.weight"))}
        if expected != present:
            missing, extra = sorted(expected - present)[:5], sorted(present - expected)[:5]
            raise ValueError(f"LoRA modules differ from this run's targets (missing {missing}, unexpected {extra})")
        for name, a, b in zip(self.names, self.lora_A, self.lora_B, strict=True):
            key_a, key_b, _ = comfy_keys(name)
            a.copy_(tensors[key_a])
            b.copy_(tensors[key_b])
