"""Hook-based LoRA adapters.

Adapters are attached with forward hooks (``y = W x + strength * alpha/r * B A dropout(x)``) instead of
replacing modules, so they work on every Linear flavour a model uses (ComfyUI's quantized fp8 layers are not
``nn.Linear`` and PEFT skips them) and detaching restores the shared model exactly: nothing of the base model
is modified, wrapped or copied. Adapter weights are float32 and live in this module, not in the model.

Under bf16 autocast the adapters compute from bf16 working copies (``use_compute_dtype``) that are refreshed
once per optimizer step with one multi-tensor copy, instead of casting 2 x 1,152 fp32 weights in every forward
and recompute (thousands of tiny cast kernels per step at full size). The optimizer keeps updating the float32
masters, so updates stay exact; only the forward arithmetic is bf16, as it is under autocast anyway.
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
        self._work: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _weights(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._work is not None:
            return self._work[0][index], self._work[1][index]
        return self.lora_A[index], self.lora_B[index]

    def _hook(self, a: torch.Tensor, b: torch.Tensor):
        # The hook holds its own two tensors, not an index: torch.compile then reuses one compiled block for
        # every block (an index would be a per-block constant and force a recompile per block).
        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = self.dropout(args[0])
            if not torch.is_autocast_enabled(x.device.type):
                x = x.to(a.dtype)
            a_x, b_x = (a, b) if a.dtype == x.dtype else (a.to(x.dtype), b.to(x.dtype))
            delta = (x @ a_x.t()) @ b_x.t()
            return output + (delta * (self.strength * self.scale)).to(output.dtype)

        return hook

    def use_compute_dtype(self, dtype: torch.dtype | None) -> None:
        """Compute in ``dtype`` from working copies (None or float32: straight from the float32 masters).

        Call it before ``attached()``: the hooks take the tensors current when they are attached."""
        if dtype is None or dtype == torch.float32:
            self._work = None
            return
        self._work = (
            [a.detach().to(dtype).requires_grad_() for a in self.lora_A],
            [b.detach().to(dtype).requires_grad_() for b in self.lora_B],
        )

    def masters(self) -> list[nn.Parameter]:
        return [*self.lora_A, *self.lora_B]

    @property
    def uses_working_copies(self) -> bool:
        return self._work is not None

    @torch.no_grad()
    def grads_to_masters(self) -> None:
        """Move the working copies' gradients onto the float32 masters (call after backward).

        Every master gradient is overwritten (zero where the forward never reached the layer, e.g. audio layers
        in video-only training), so the masters' gradient buffers are kept from step to step instead of being
        freed and reallocated: ~2,300 tensors at full size."""
        if self._work is None:
            return
        pairs = list(zip(self.masters(), [*self._work[0], *self._work[1]], strict=True))
        for m, _ in pairs:
            if m.grad is None:
                m.grad = torch.zeros_like(m)
        reached = [(m.grad, w.grad) for m, w in pairs if w.grad is not None]
        if reached:
            torch._foreach_copy_([g for g, _ in reached], [w for _, w in reached])
        unreached = [m.grad for m, w in pairs if w.grad is None]
        if unreached:
            torch._foreach_zero_(unreached)
        for _, w in pairs:
            w.grad = None

    @torch.no_grad()
    def refresh_work(self) -> None:
        """Copy the float32 masters into the working copies (call after each optimizer step or weight load)."""
        if self._work is not None:
            torch._foreach_copy_([*self._work[0], *self._work[1]], self.masters())

    @contextmanager
    def attached(self, strength: float = 1.0) -> Iterator[LoraAdapters]:
        """Hook the adapters into their modules for the duration of the block; always detached afterwards."""
        previous, self.strength = self.strength, strength
        handles = [m.register_forward_hook(self._hook(*self._weights(i))) for i, m in enumerate(self._targets)]
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
    def zero_b_names(self) -> list[str]:
        """Modules whose ``lora_B`` is exactly zero: untrained (B starts at zero), so the layer changes nothing."""
        return [name for name, b in zip(self.names, self.lora_B, strict=True) if not bool(b.any())]

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
        self.refresh_work()
