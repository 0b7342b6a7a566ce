"""Frozen quantized (scaled fp8) Linear weights trained as a dequantize followed by a plain matmul.

On a card with fp8 compute (Ada, Hopper and later) ComfyUI loads a scaled-fp8 checkpoint with
``mixed_precision_ops``, whose Linear takes its own training path whenever the input requires grad:
``QuantLinearFunc`` quantizes the *activations* to fp8 with the file's fixed ``input_scale`` and runs comfy-kitchen's
fp8 matmul. Two consequences for LoRA training, measured on a tiny LTX-2.3 file loaded as on an H100:

- ``torch.compile`` cannot trace that function: building the activation's ``QuantizedTensor`` inside it is a graph
  break ("SourcelessBuilder ... TensorCoreFP8Layout.Params") at every quantized Linear, so a compiled block falls
  apart into one graph per Linear with eager code between (2 blocks: 30 breaks, 43 graphs instead of 2).
- The forward sees fp8-rounded, clipped activations (about 2 % output error on one layer), so the LoRA learns against
  a different function than the dequantized weights compute, and its gradients differ accordingly.

ComfyUI's own switch for a quantized layer is ``_full_precision_mm`` (set on cards without fp8 compute): the weight
is dequantized (one comfy-kitchen kernel, fp8 * scale) and multiplied in the activation's dtype. ``dequantized_matmuls``
turns it on for the duration of training and restores every layer's value afterwards; the weights themselves are
never touched. The LoRA hooks and their gradients are unchanged (bf16/fp32).

Inside the compiled blocks the dequantize itself is traced as plain tensor ops (``traced_fp8_dequantize``) instead of
comfy-kitchen's custom op: Inductor cannot look into a custom op, so each call stayed a Python call at run time
(backend lookup and argument checks, about 20-60 us on the host) for every quantized Linear, twice per block and step:
68 calls per audio+video block (34 Linears), 24 per video-only block. Traced, it fuses into the kernels around it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

logger = logging.getLogger(__name__)


@contextmanager
def traced_fp8_dequantize() -> Iterator[None]:
    """While torch.compile traces, ComfyUI's scaled-fp8 layouts dequantize as ``fp8 * scale`` in float32 rounded once
    to the weight's dtype (the exact value the file stores, what comfy-kitchen's CUDA kernel computes); calls outside
    tracing keep comfy-kitchen's kernel. The class attribute is restored on any exit."""
    import comfy.quant_ops

    base = getattr(comfy.quant_ops, "_TensorCoreFP8LayoutBase", None)
    if base is None:  # a ComfyUI without comfy-kitchen has no quantized layers
        yield
        return
    kernel = base.dequantize.__func__
    own = base.__dict__.get("dequantize")

    def dequantize(cls, qdata: torch.Tensor, params) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return (qdata.to(torch.float32) * params.scale.to(torch.float32)).to(params.orig_dtype)
        return kernel(cls, qdata, params)

    base.dequantize = classmethod(dequantize)
    try:
        yield
    finally:
        if own is None:
            del base.dequantize
        else:
            base.dequantize = own


@contextmanager
def dequantized_matmuls(module: nn.Module) -> Iterator[int]:
    """Make every quantized ComfyUI Linear under ``module`` dequantize its weight instead of quantizing its input;
    yield how many layers changed. Their previous setting is restored on any exit."""
    changed = [
        m for m in module.modules()
        if getattr(m, "layout_type", None) is not None and m.__dict__.get("_full_precision_mm") is False
    ]
    try:
        for m in changed:
            m._full_precision_mm = True
        if changed:
            logger.info("training %d quantized layers as dequantize + matmul (no fp8 activations)", len(changed))
        yield len(changed)
    finally:
        for m in changed:
            m._full_precision_mm = False
