"""What the engine trains on: cached latents and text embeddings, one sample at a time.

The cache step (``trainer_core.cache``) produces a ``TrainingData`` backed by safetensors files; tests, the demo and
the Train node's direct-latent input use ``InMemoryData``. Batches only group samples of the same latent shape and
frame rate (bucket-aware batching: one batch is one model call, at one frame rate), and each epoch's order is a pure
function of (seed, batch size, epoch), so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(frozen=True)
class Sample:
    """One cached clip: normalized latents as ComfyUI's VAE returns them and the caption's encoder output."""

    key: str
    video: torch.Tensor  # [128, F', H', W']
    text: torch.Tensor  # [1, T, D] as ComfyUI's LTX-2.3 text encoder returns it
    frame_rate: float
    audio: torch.Tensor | None = None  # [8, T_a, 16]
    caption: str = ""
    # IC-LoRA: the clean latent of the clip's reference (control) video, cut with the target's frames and encoded
    # at 1/``reference_downscale_factor`` of its height and width: [128, F', H'/N, W'/N]
    reference: torch.Tensor | None = None


class TrainingData(Protocol):
    """Random access to samples plus what the run needs to know about the data."""

    empty_text: torch.Tensor  # the empty caption's encoder output, for caption dropout
    fingerprint: str  # changes whenever any sample's content changes
    trigger: str
    reference_downscale_factor: int  # reference sides = target sides / this; 1 when no sample has a reference
    # The reference's latent frames - 1 = the target's / this (ltx-trainer's temporal factor); read with getattr,
    # default 1, by ``engine.modes``.
    reference_temporal_scale_factor: int

    @property
    def has_empty_text(self) -> bool:
        """Whether ``empty_text`` is a real encoding of the empty caption (caption dropout needs one)."""
        ...

    def __len__(self) -> int: ...

    def shape_of(self, index: int) -> tuple[int, ...]:
        """Latent shape of a sample without loading it (for bucket batching)."""
        ...

    def frame_rate_of(self, index: int) -> float:
        """Frame rate of a sample without loading it (for bucket batching)."""
        ...

    def __getitem__(self, index: int) -> Sample: ...

    def audio_count(self) -> int:
        """How many samples carry audio latents, without loading them (the recipe's audio modes need it)."""
        ...

    def reference_count(self) -> int:
        """How many samples carry a reference latent (IC-LoRA), without loading them."""
        ...


def audio_count(data: TrainingData) -> int:
    """``data.audio_count()``; data that cannot tell (an older ``TrainingData``) counts as having no audio."""
    counter = getattr(data, "audio_count", None)
    return int(counter()) if counter is not None else 0


def first_latents(data: TrainingData, count: int, pick: Callable[[Sample], torch.Tensor | None]) -> list[torch.Tensor]:
    """The first ``count`` latents ``pick`` finds in the samples, in order, as float32, skipping samples without
    one and loading only as many samples as it takes (previews conditioned or guided by training clips)."""
    found: list[torch.Tensor] = []
    for i in range(len(data)):
        if len(found) == count:
            break
        if (latent := pick(data[i])) is not None:
            found.append(latent.float())
    return found


def batch_shape(video: Sequence[int], audio: Sequence[int] | None, reference: Sequence[int] | None) -> tuple[int, ...]:
    """``shape_of``'s value: the video latent shape, then the audio's and the reference's when present.

    Batches group equal values, so clips with and without audio or a reference (or with other shapes of either)
    never share one. The lengths tell the parts apart: 4 (video), 7 (+audio), 8 (+reference), 11 (both).
    """
    return tuple(int(n) for part in (video, audio, reference) if part is not None for n in part)


@dataclass
class InMemoryData:
    """Samples held in memory (tests, demo, latents passed straight into the Train node).

    An ``empty_text`` of 0 tokens means the data has no empty caption (latents wired straight into the Train node).
    """

    samples: list[Sample]
    empty_text: torch.Tensor
    trigger: str = ""
    reference_downscale_factor: int = 1
    reference_temporal_scale_factor: int = 1
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("the training data has no samples")
        h = hashlib.sha256()
        for s in self.samples:
            h.update(s.key.encode())
            for t in (s.video, s.text, s.audio, s.reference):
                if t is not None:
                    h.update(t.detach().float().cpu().numpy().tobytes())
        self.fingerprint = h.hexdigest()[:16]

    @property
    def has_empty_text(self) -> bool:
        return self.empty_text.shape[-2] > 0

    def __len__(self) -> int:
        return len(self.samples)

    def shape_of(self, index: int) -> tuple[int, ...]:
        s = self.samples[index]
        return batch_shape(s.video.shape, *(None if t is None else t.shape for t in (s.audio, s.reference)))

    def frame_rate_of(self, index: int) -> float:
        return self.samples[index].frame_rate

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def audio_count(self) -> int:
        return sum(s.audio is not None for s in self.samples)

    def reference_count(self) -> int:
        return sum(s.reference is not None for s in self.samples)


def epoch_batches(data: TrainingData, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: shuffled, samples of one shape and frame rate each, deterministic in the arguments."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i in torch.randperm(len(data), generator=g).tolist():
        buckets[(data.shape_of(i), data.frame_rate_of(i))].append(i)
    batches = [idx[k : k + batch_size] for idx in buckets.values() for k in range(0, len(idx), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack the latents of same-shape samples into a batch."""
    video = torch.stack([s.video for s in samples])
    audio = None if samples[0].audio is None else torch.stack([s.audio for s in samples])
    return video, audio
