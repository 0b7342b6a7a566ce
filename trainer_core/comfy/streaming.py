"""Prefetching weight streamer for the transformer blocks ComfyUI keeps on the host (its low-VRAM mode).

When the model does not fit beside training's memory, ComfyUI loads part of it and leaves the rest on the host
(pinned), copying each such layer to the GPU when the layer runs. In training those copies run one after the
other with the compute (under ``torch.compile`` ComfyUI uses no side stream at all), and they happen twice per
step: in the forward and again in the backward's checkpoint recompute. This streamer overlaps them instead:

- Two device *slots*, each large enough for the host-resident weights of one block. While block ``i`` computes,
  block ``i + 1``'s host weights are copied into the other slot on a side stream; in the backward the same runs
  downwards, started by an autograd marker on each streamed block's output (its backward runs before the block's).
- A block in a slot runs with its parameters pointing at the slot (``param.data`` swapped, ComfyUI's per-layer
  cast switched off as for resident layers): to ComfyUI and to ``torch.compile`` it looks fully resident, so the
  compiled graph of the resident blocks serves it too. Evicting a block points its parameters back at the host.
- Only with checkpointed blocks: the recompute then reads the parameters as they are at backward time (the slot
  the marker filled). Without checkpointing autograd would keep views of a slot that later holds another block.

Slots are reused in stream order: a copy into a slot waits for an event recorded after the last kernels that
read the block it replaces. ``release()`` points every parameter back at its host tensor and frees the slots;
it must run before anything else moves weights (ComfyUI's loader, the end of the training session).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

_UNSET = object()  # a layer without an instance-level cast flag
_ALIGN = 256  # byte alignment of each tensor in a slot (what kernels and Inductor assume of an input)


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


@dataclass
class _Tensor:
    """One host-resident parameter of a block and where it goes in a slot."""

    param: torch.Tensor  # the object in ``module._parameters`` (its ``.data`` is swapped)
    host: torch.Tensor  # its host data, restored on eviction
    offset: int  # byte offset in the slot


@dataclass
class _Block:
    tensors: list[_Tensor]
    flags: list[tuple[nn.Module, Any]]  # layers with ComfyUI's cast flag, and its instance value (_UNSET: none)
    nbytes: int


@dataclass
class _Slot:
    buffer: torch.Tensor  # uint8 on the device
    block: int | None = None
    used: int = -1  # tick of the last use (least recently used is evicted first)
    ready: torch.cuda.Event | None = None  # recorded on the copy stream after the block's copies


def _host_tensors(block: nn.Module, device: torch.device, everything: bool) -> _Block | None:
    """The plain host-resident parameters of ``block`` (all of them with ``everything``), laid out for a slot.

    Quantized wrapper tensors (scaled fp8 ``QuantizedTensor``) stay on ComfyUI's own per-layer path.
    """
    tensors, flags, offset = [], [], 0
    for module in block.modules():
        owned = False
        for param in module._parameters.values():
            if param is None or param.requires_grad or type(param.data) is not torch.Tensor:
                continue
            if param.device.type == device.type and not everything:
                continue
            tensors.append(_Tensor(param, param.data, offset))
            offset += _aligned(param.data.nbytes)
            owned = True
        if owned and hasattr(module, "comfy_cast_weights"):
            flags.append((module, module.__dict__.get("comfy_cast_weights", _UNSET)))
    return _Block(tensors, flags, offset) if tensors else None


def uniform_cast_flag(module: nn.Module, device: torch.device) -> None:
    """Give a layer whose weights are all on ``device`` (and carry no ComfyUI weight patches) the class default
    of ``comfy_cast_weights``, as on the layers ComfyUI loads outright, by dropping its instance-level flag.

    ComfyUI's loads leave the flag on the instance of every layer that was once offloaded, sometimes True for a
    layer now on the device (its reload restores a previous value that was itself the offload flag). For such a
    layer both values compute the same (a cast to where the weight already is), but torch.compile guards on the
    flag and on where it lives, so without this, blocks differing only in that compile graphs of their own (seen:
    six extra 13 s compiles after a reload).
    """
    if "comfy_cast_weights" not in module.__dict__:
        return
    if getattr(module, "weight_function", None) or getattr(module, "bias_function", None):
        return
    if all(p.device.type == device.type for p in module.parameters(recurse=False)):
        del module.__dict__["comfy_cast_weights"]


def slot_reserve_bytes(blocks: nn.ModuleList) -> int:
    """Device memory the two slots need at most (every parameter of the largest block streamed)."""
    largest = max((sum(_aligned(p.data.nbytes) for p in b.parameters()) for b in blocks), default=0)
    return 2 * largest


class _ReloadInBackward(torch.autograd.Function):
    """Identity on a streamed block's outputs whose backward brings the block back before its own backward."""

    @staticmethod
    def forward(ctx, streamer: BlockStreamer, index: int, vx: torch.Tensor, ax: torch.Tensor):
        ctx.streamer, ctx.index = streamer, index
        return vx.view_as(vx), ax.view_as(ax)

    @staticmethod
    def backward(ctx, grad_vx: torch.Tensor | None, grad_ax: torch.Tensor | None):
        ctx.streamer.enter(ctx.index, direction=-1)
        return None, None, grad_vx, grad_ax


class BlockStreamer:
    """Streams the host-resident weights of ``blocks`` through two device slots, one block ahead of the compute.

    ``streamed``: the block indices to stream with *all* their parameters (tests use this where nothing is
    offloaded); by default the blocks with plain parameters off ``device``, as ComfyUI's partial load left them.
    """

    def __init__(self, blocks: nn.ModuleList, device: torch.device, streamed: Iterable[int] | None = None) -> None:
        forced = None if streamed is None else set(streamed)
        self.device = device
        self.plan: dict[int, _Block] = {}
        for i, block in enumerate(blocks):
            if forced is None or i in forced:
                planned = _host_tensors(block, device, everything=forced is not None)
                if planned is not None:
                    self.plan[i] = planned
        self.order = sorted(self.plan)
        self.bytes_copied = 0  # what crossed to the device so far (the benchmark reports it per step)
        self._tick = 0
        size = max((b.nbytes for b in self.plan.values()), default=0)
        self._slot_bytes = size
        self.slots: list[_Slot] = []  # allocated at the first load, freed by release()
        cuda = device.type == "cuda" and bool(self.plan)
        self._copy_stream = torch.cuda.Stream(device) if cuda else None
        if self.plan:
            unpinned = sum(t.host.nbytes for b in self.plan.values() for t in b.tensors if not t.host.is_pinned()) \
                if cuda else 0
            log.info(
                "streaming %d of %d blocks (%.2f GiB per pass) through two %.2f GiB device slots%s",
                len(self.plan), len(blocks), sum(b.nbytes for b in self.plan.values()) / 2**30, size / 2**30,
                f"; {unpinned / 2**20:.0f} MiB of it not pinned (copied without overlap)" if unpinned else "",
            )

    def streams(self, index: int) -> bool:
        return index in self.plan

    # -- the two hooks -------------------------------------------------------------------------------------------
    def enter(self, index: int, direction: int = 1) -> None:
        """Make block ``index`` runnable now and start copying the next streamed block in ``direction``
        (+1 forward, -1 backward) into the other slot."""
        self._use(index)
        position = self.order.index(index) + direction
        if 0 <= position < len(self.order):
            self._load(self.order[position], keep=index)

    def mark(self, index: int, vx: torch.Tensor, ax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Wrap block ``index``'s outputs so the backward reloads the block (see ``_ReloadInBackward``)."""
        return _ReloadInBackward.apply(self, index, vx, ax)

    def release(self) -> None:
        """Point every parameter back at its host tensor and free the slots; the next block loads them again."""
        if self._copy_stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self._copy_stream)
        for slot in self.slots:
            self._evict(slot)
        self.slots = []

    # -- internals -----------------------------------------------------------------------------------------------
    def _slot_of(self, index: int) -> _Slot | None:
        return next((s for s in self.slots if s.block == index), None)

    def _use(self, index: int) -> None:
        slot = self._slot_of(index) or self._load(index, keep=None)
        if slot.ready is not None:  # the compute waits for the copy, on the device: the host never blocks
            torch.cuda.current_stream(self.device).wait_event(slot.ready)
            slot.ready = None
        self._tick += 1
        slot.used = self._tick

    def _load(self, index: int, keep: int | None) -> _Slot:
        """Copy block ``index`` into the least recently used slot not holding ``keep``; swap its parameters in."""
        slot = self._slot_of(index)
        if slot is not None:
            return slot
        if not self.slots:
            self.slots = [_Slot(torch.empty(self._slot_bytes, dtype=torch.uint8, device=self.device)) for _ in range(2)]
        slot = min((s for s in self.slots if s.block is None or s.block != keep), key=lambda s: s.used)
        self._evict(slot)
        block = self.plan[index]
        views = [self._view(slot, t) for t in block.tensors]
        if self._copy_stream is None:
            for view, t in zip(views, block.tensors, strict=True):
                view.copy_(t.host)
        else:
            # Everything queued so far may still read the evicted block: the copy waits for it on the device.
            freed = torch.cuda.current_stream(self.device).record_event()
            with torch.cuda.stream(self._copy_stream):
                self._copy_stream.wait_event(freed)
                for view, t in zip(views, block.tensors, strict=True):
                    view.copy_(t.host, non_blocking=True)
                slot.ready = self._copy_stream.record_event()
        for view, t in zip(views, block.tensors, strict=True):
            t.param.data = view
        for module, _ in block.flags:  # now resident: the layer runs as ComfyUI runs the layers it loaded
            uniform_cast_flag(module, self.device)
        slot.block = index
        self.bytes_copied += block.nbytes
        return slot

    def _evict(self, slot: _Slot) -> None:
        if slot.block is None:
            return
        block = self.plan[slot.block]
        for t in block.tensors:
            t.param.data = t.host
        for module, flag in block.flags:  # back on the host: ComfyUI's flag as its load left it
            if flag is _UNSET:
                module.__dict__.pop("comfy_cast_weights", None)
            else:
                module.comfy_cast_weights = flag
        slot.block, slot.ready, slot.used = None, None, -1

    @staticmethod
    def _view(slot: _Slot, t: _Tensor) -> torch.Tensor:
        n = t.host.nbytes
        return slot.buffer[t.offset : t.offset + n].view(t.host.dtype).view(t.host.shape)
