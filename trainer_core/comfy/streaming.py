"""Prefetching weight streamer for the transformer blocks ComfyUI keeps on the host.

ComfyUI leaves weights on the host in two situations: its low-VRAM mode loads part of the model and copies each
remaining layer to the GPU when it runs, and its dynamic VRAM mode (comfy-aimdo, the default on NVIDIA since v0.31)
leaves every layer in the memory-mapped checkpoint and pages it into aimdo's own device memory per layer call. In
training those per-layer copies run one after the other with the compute, twice per step (forward and the
checkpoint recompute), and they keep the blocks out of ``torch.compile``. This streamer takes the blocks over:

- Blocks that fit in the memory given (``resident_bytes``) are copied once into device slots of their own and stay
  there for the training session: with enough memory the whole model trains resident and compiled.
- The others rotate through two device *slots*, each large enough for one block. While block ``i`` computes, block
  ``i + 1`` is copied into the other slot on a side stream; in the backward the same runs downwards, started by an
  autograd marker on each streamed block's output (its backward runs before the block's).
- A block in a slot runs with its parameters pointing at the slot (``param.data`` swapped; for ComfyUI's quantized
  scaled-fp8 weights the inner tensors are copied and the ``Parameter`` rewrapped; ComfyUI's per-layer cast switched
  off as for resident layers): to ComfyUI and to ``torch.compile`` it looks fully resident, so the compiled graph
  of the resident blocks serves it too. Evicting a block points its parameters back at the host.
- Only with checkpointed blocks: the recompute then reads the parameters as they are at backward time (the slot
  the marker filled). Without checkpointing autograd would keep views of a slot that later holds another block.
- Layers ComfyUI patches per call (a LoRA applied to the MODEL before training) stay on ComfyUI's own path.

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
    """One host-resident parameter of a block and where its bytes go in a slot."""

    module: nn.Module
    name: str
    param: nn.Parameter  # the object in ``module._parameters`` while the block is on the host
    host: torch.Tensor  # ``param.data`` on the host, restored on eviction
    sources: list[torch.Tensor]  # plain tensors copied: the data, or a quantized tensor's inner tensors
    offsets: list[int]  # byte offset of each source in the slot

    @property
    def quantized(self) -> bool:
        return type(self.host) is not torch.Tensor


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


def _patched(module: nn.Module) -> bool:
    """Whether ComfyUI computes this layer's weight per call (a LoRA or other patch applied to the MODEL): such a
    layer stays on ComfyUI's own path, which applies the patch."""
    return any(getattr(module, f"{p}_function", None) for p in ("weight", "bias")) or any(
        getattr(module, f"{p}_lowvram_function", None) is not None for p in ("weight", "bias")
    )


def _sources(data: torch.Tensor) -> list[torch.Tensor] | None:
    """The plain tensors holding ``data``: itself, or the inner tensors of a wrapper subclass such as ComfyUI's
    scaled-fp8 ``QuantizedTensor`` (None for anything else, which then stays on ComfyUI's path)."""
    if type(data) is torch.Tensor:
        return [data]
    flatten = getattr(data, "__tensor_flatten__", None)
    if flatten is None:
        return None
    names, _ = flatten()
    inner = [getattr(data, n) for n in names]
    return inner if all(type(t) is torch.Tensor for t in inner) else None


def _host_tensors(block: nn.Module, device: torch.device, everything: bool) -> _Block | None:
    """The host-resident parameters of ``block`` (all of them with ``everything``), laid out for a slot: plain
    tensors and ComfyUI's quantized (scaled fp8) weights, whose inner tensors are copied and rewrapped."""
    tensors, flags, offset = [], [], 0
    for module in block.modules():
        if _patched(module):
            continue
        owned = False
        for name, param in module._parameters.items():
            if param is None or param.requires_grad or param.is_meta:
                continue
            if param.device.type == device.type and not everything:
                continue
            sources = _sources(param.data)
            if sources is None:
                continue
            offsets = []
            for source in sources:
                offsets.append(offset)
                offset += _aligned(source.nbytes)
            tensors.append(_Tensor(module, name, param, param.data, sources, offsets))
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


def block_bytes(block: nn.Module) -> int:
    """Device bytes one whole block takes in a slot."""
    return sum(_aligned(t.nbytes) for p in block.parameters() for t in (_sources(p.data) or [p.data]))


def slot_reserve_bytes(blocks: nn.ModuleList) -> int:
    """Device memory the two rotating slots need at most (every parameter of the largest block streamed)."""
    return 2 * max((block_bytes(b) for b in blocks), default=0)


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
    offloaded); by default the blocks with parameters off ``device``, as ComfyUI's partial load or its dynamic
    VRAM mode left them. ``resident_bytes``: device memory for blocks that, once copied, stay in slots of their own
    until ``release()`` (the first blocks in order that fit); only the others rotate through the two slots.
    ``pinned``: copy the rotating blocks' host weights into pinned memory, so their copies overlap the compute
    (ComfyUI's dynamic VRAM mode leaves them in the memory-mapped checkpoint file); the dict keeps those copies
    (by host address and size) for the next streamer, which a preview or a reload makes.
    """

    def __init__(self, blocks: nn.ModuleList, device: torch.device, streamed: Iterable[int] | None = None,
                 resident_bytes: int = 0, pinned: dict[tuple[int, int], torch.Tensor] | None = None) -> None:
        forced = None if streamed is None else set(streamed)
        self.device = device
        self.plan: dict[int, _Block] = {}
        for i, block in enumerate(blocks):
            if forced is None or i in forced:
                planned = _host_tensors(block, device, everything=forced is not None)
                if planned is not None:
                    self.plan[i] = planned
        self.order = sorted(self.plan)
        self.resident: set[int] = set()
        for i in self.order:
            if self.plan[i].nbytes > resident_bytes:
                break
            resident_bytes -= self.plan[i].nbytes
            self.resident.add(i)
        self.bytes_copied = 0  # what crossed to the device so far (the benchmark reports it per step)
        self._tick = 0
        rotating = [self.plan[i] for i in self.order if i not in self.resident]
        self._slot_bytes = max((b.nbytes for b in rotating), default=0)
        self.slots: list[_Slot] = []  # the two rotating slots, allocated at the first load, freed by release()
        self.resident_slots: list[_Slot] = []
        cuda = device.type == "cuda" and bool(self.plan)
        self._copy_stream = torch.cuda.Stream(device) if cuda else None
        pinned = _pin_sources(rotating, pinned) if pinned is not None and cuda else 0
        if self.plan:
            unpinned = sum(s.nbytes for b in rotating for t in b.tensors for s in t.sources if not s.is_pinned()) \
                if cuda else 0
            log.info(
                "streaming %d of %d blocks: %d stay on the device once copied (%.2f GiB), %d rotate through two "
                "%.2f GiB slots (%.2f GiB per pass)%s%s",
                len(self.plan), len(blocks), len(self.resident),
                sum(self.plan[i].nbytes for i in self.resident) / 2**30, len(rotating), self._slot_bytes / 2**30,
                sum(b.nbytes for b in rotating) / 2**30,
                f"; {pinned / 2**30:.2f} GiB pinned on the host" if pinned else "",
                f"; {unpinned / 2**20:.0f} MiB of it not pinned (copied without overlap)" if unpinned else "",
            )

    def streams(self, index: int) -> bool:
        return index in self.plan

    @property
    def device_bytes(self) -> int:
        """Device memory the slots take once every streamed block has run."""
        rotating = len(self.plan) > len(self.resident)
        return sum(self.plan[i].nbytes for i in self.resident) + (2 * self._slot_bytes if rotating else 0)

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
        for slot in self.slots + self.resident_slots:
            self._evict(slot)
        self.slots, self.resident_slots = [], []

    # -- internals -----------------------------------------------------------------------------------------------
    def _slot_of(self, index: int) -> _Slot | None:
        return next((s for s in self.slots + self.resident_slots if s.block == index), None)

    def _use(self, index: int) -> None:
        slot = self._slot_of(index) or self._load(index, keep=None)
        if slot.ready is not None:  # the compute waits for the copy, on the device: the host never blocks
            torch.cuda.current_stream(self.device).wait_event(slot.ready)
            slot.ready = None
        self._tick += 1
        slot.used = self._tick

    def _free_slot(self, index: int, keep: int | None) -> _Slot:
        """A slot for block ``index``: its own for a resident block, else the least recently used rotating slot
        not holding ``keep``, emptied."""
        if index in self.resident:
            slot = _Slot(torch.empty(self.plan[index].nbytes, dtype=torch.uint8, device=self.device))
            self.resident_slots.append(slot)
            return slot
        if not self.slots:
            self.slots = [_Slot(torch.empty(self._slot_bytes, dtype=torch.uint8, device=self.device)) for _ in range(2)]
        slot = min((s for s in self.slots if s.block is None or s.block != keep), key=lambda s: s.used)
        self._evict(slot)
        return slot

    def _load(self, index: int, keep: int | None) -> _Slot:
        """Copy block ``index`` into a free slot (``_free_slot``) and point its parameters there."""
        slot = self._slot_of(index)
        if slot is not None:
            return slot
        slot = self._free_slot(index, keep)
        block = self.plan[index]
        pairs = [(self._view(slot, off, src), src) for t in block.tensors for src, off in zip(t.sources, t.offsets,
                                                                                                strict=True)]
        if self._copy_stream is None:
            for view, src in pairs:
                view.copy_(src)
        else:
            # Everything queued so far may still read the evicted block: the copy waits for it on the device.
            freed = torch.cuda.current_stream(self.device).record_event()
            with torch.cuda.stream(self._copy_stream):
                self._copy_stream.wait_event(freed)
                for view, src in pairs:
                    view.copy_(src, non_blocking=True)
                slot.ready = self._copy_stream.record_event()
        views = iter(view for view, _ in pairs)
        for t in block.tensors:
            device_parts = [next(views) for _ in t.sources]
            if t.quantized:  # a wrapper subclass cannot take new inner tensors through .data: swap the Parameter
                names, meta = t.host.__tensor_flatten__()
                value = type(t.host).__tensor_unflatten__(dict(zip(names, device_parts, strict=True)), meta,
                                                          t.host.shape, t.host.stride())
                t.module._parameters[t.name] = nn.Parameter(value, requires_grad=False)
            else:
                t.param.data = device_parts[0]
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
            if t.quantized:
                t.module._parameters[t.name] = t.param
            else:
                t.param.data = t.host
        for module, flag in block.flags:  # back on the host: ComfyUI's flag as its load left it
            if flag is _UNSET:
                module.__dict__.pop("comfy_cast_weights", None)
            else:
                module.comfy_cast_weights = flag
        slot.block, slot.ready, slot.used = None, None, -1

    @staticmethod
    def _view(slot: _Slot, offset: int, like: torch.Tensor) -> torch.Tensor:
        return slot.buffer[offset : offset + like.nbytes].view(like.dtype).view(like.shape)


def _pin_sources(blocks: list[_Block], cache: dict[tuple[int, int], torch.Tensor]) -> int:
    """Point the host sources of ``blocks`` at pinned copies (``cache``'s, else new ones, one buffer per block);
    return the bytes newly pinned. Only the copy sources change: eviction still restores each parameter's own
    host tensor. Copies no longer streamed (a new plan keeps more blocks on the device) leave the cache; where
    the host cannot pin more, the rest is copied from where it is, without overlap."""
    wanted = {(s.data_ptr(), s.nbytes) for b in blocks for t in b.tensors for s in t.sources}
    for key in [k for k in cache if k not in wanted]:
        del cache[key]
    pinned = 0
    for block in blocks:
        todo = []
        for t in block.tensors:
            for k, source in enumerate(t.sources):
                key = (source.data_ptr(), source.nbytes)
                if key in cache:
                    t.sources[k] = cache[key]
                elif not source.is_pinned():
                    todo.append((t, k, key))
        if not todo:
            continue
        size = sum(_aligned(t.sources[k].nbytes) for t, k, _ in todo)
        try:
            buffer = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        except RuntimeError as err:  # the host's pinnable memory is spent: stream the rest unpinned
            log.warning("could not pin %.2f GiB more host memory (%s): the remaining streamed blocks are copied "
                        "without overlap, slower", size / 2**30, err)
            break
        offset = 0
        for t, k, key in todo:
            source = t.sources[k]
            view = buffer[offset : offset + source.nbytes].view(source.dtype).view(source.shape)
            view.copy_(source)
            t.sources[k] = cache[key] = view
            offset += _aligned(source.nbytes)
        pinned += size
    return pinned
