"""Make a model built under ``torch.inference_mode()`` trainable through adapters, without copying its weights.

ComfyUI runs every node under ``torch.inference_mode()``, so the weights its loaders create are *inference
tensors*, and autograd refuses to save one for backward ("Inference tensors cannot be saved for backward"): any
frozen weight that meets an activation requiring grad (every Linear and RMSNorm downstream of a LoRA) fails.
Cloning each weight would double host or device memory (the native Train LoRA node reloads the whole file).

Instead, for the duration of training every inference parameter and buffer is replaced by a *normal* tensor
created outside inference mode that aliases the same storage (``torch.empty(0).set_(storage, ...)``): zero
bytes copied, and autograd accepts it. On exit the original objects are put back, so the module tree holds the
very same tensors as before. ComfyUI's quantized weights (``comfy_kitchen`` ``QuantizedTensor``, scaled fp8 and
friends) are wrapper subclasses: their inner tensors (fp8 data, scales) are aliased one by one and the wrapper
is rebuilt with ``__tensor_flatten__`` / ``__tensor_unflatten__``, again without a copy.

If ComfyUI's memory management moves a weight while the aliases are installed (``param.data = ...`` during a
load in the middle of training), the original object would point at stale storage; restoring then builds an
inference-mode alias of the *current* data instead, so the model stays where ComfyUI put it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _alias_plain(t: torch.Tensor) -> torch.Tensor:
    """A tensor sharing ``t``'s storage, created in the current (inference or normal) mode."""
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(
        t.untyped_storage(), t.storage_offset(), t.size(), t.stride()
    )


def _alias(t: torch.Tensor) -> torch.Tensor:
    """Alias a plain tensor or a traceable wrapper subclass (``QuantizedTensor``) by aliasing its inner tensors."""
    if type(t) is torch.Tensor or not hasattr(type(t), "__tensor_unflatten__"):
        return _alias_plain(t)
    names, ctx = t.__tensor_flatten__()
    inner = {n: _alias(getattr(t, n)) for n in names}
    return type(t).__tensor_unflatten__(inner, ctx, t.size(), t.stride())


def _unwrap(t: torch.Tensor) -> torch.Tensor:
    """The tensor inside a Parameter (a Parameter wrapping a subclass keeps the subclass type)."""
    return t.data if isinstance(t, nn.Parameter) else t


def _rewrap(like: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Wrap ``value`` the way ``like`` was wrapped (Parameter or not), keeping attributes ComfyUI set on it.

    Dynamic VRAM tags plain weights (``weight._model_dtype``); a wrapper subclass keeps its state in its own
    ``__dict__`` (``_qdata``...), which must stay the alias's.
    """
    out = nn.Parameter(value, requires_grad=False) if isinstance(like, nn.Parameter) else value
    if type(_unwrap(like)) is torch.Tensor:
        for key, attr in like.__dict__.items():
            setattr(out, key, attr)
    return out


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.dtype == b.dtype and a.shape == b.shape and a.data_ptr() == b.data_ptr()


def _is_inference(t: torch.Tensor) -> bool:
    inner = getattr(t, "_qdata", None)  # QuantizedTensor: the fp8 data is what autograd would save
    return t.is_inference() or (isinstance(inner, torch.Tensor) and inner.is_inference())


@dataclass
class _Swap:
    store: dict
    name: str
    original: torch.Tensor
    alias: torch.Tensor


@contextmanager
def trainable_aliases(module: nn.Module) -> Iterator[int]:
    """Swap every inference-mode parameter/buffer of ``module`` for a zero-copy normal alias; yield the count.

    The originals are restored on exit, whatever the exit (error, ``InterruptProcessingException``).
    """
    swaps: list[_Swap] = []
    try:
        with torch.inference_mode(False):
            for mod in module.modules():
                for store in (mod._parameters, mod._buffers):
                    for name, t in list(store.items()):
                        if t is None or not _is_inference(t):
                            continue
                        alias = _rewrap(t, _alias(_unwrap(t)))
                        store[name] = alias
                        swaps.append(_Swap(store, name, t, alias))
        logger.debug("aliased %d inference tensors for training", len(swaps))
        yield len(swaps)
    finally:
        _restore(swaps)


def _restore(swaps: list[_Swap]) -> None:
    moved = replaced = 0
    for s in reversed(swaps):
        current = s.store.get(s.name)
        if current is not s.alias:
            replaced += 1  # ComfyUI installed its own tensor meanwhile: that one is the truth now
            continue
        if _same_storage(_unwrap(s.alias), _unwrap(s.original)):
            s.store[s.name] = s.original
        else:
            moved += 1
            with torch.inference_mode():
                s.store[s.name] = _rewrap(s.original, _alias(_unwrap(s.alias)))
    if moved or replaced:
        logger.info("restored inference weights: %d moved and %d replaced by ComfyUI during training", moved, replaced)
