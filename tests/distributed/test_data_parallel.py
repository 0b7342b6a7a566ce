"""Data parallel training (``trainer_core.engine.distributed``) on the CPU: 2 gloo processes on the tiny model.

One process with batch 2 is the reference. One spawn of 2 processes trains with batch 1 each from scratch, resumes
from the reference's step-2 checkpoint and from a batch-1 process's, and runs once more with rank 1 failing
(``together`` keeps the process group usable after a failure, so the four share one spawn). The reference
process then resumes from the 2-process step-2 checkpoint. 3 clips in batches of 2 make every epoch end in a batch
of 1, where rank 1's share is empty.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.engine_support import TEXT_DIM, config, synthetic_data, tiny_backbone
from trainer_core.engine.checkpoints import checkpoint_path
from trainer_core.engine.data import InMemoryData
from trainer_core.engine.distributed import DataParallel
from trainer_core.engine.trainer import Trainer
from trainer_core.errors import UserError

STEPS, RANKS = 4, 2


def _data() -> InMemoryData:
    # One caption length (the empty caption's too): one process with batch 2 concatenates the captions.
    data = synthetic_data(n=3)
    samples = [replace(s, text=s.text[:, :5]) for s in data.samples]
    return InMemoryData(samples, empty_text=torch.randn(1, 5, TEXT_DIM, generator=torch.Generator().manual_seed(1)))


def _config(tmp: Path, name: str, batch: int):
    return config(
        tmp,
        output_dir=str(tmp / name),
        optimization={"steps": STEPS, "learning_rate": 1e-2, "batch_size": batch},
        checkpoints={"every": 2},
        recipe={"first_frame_p": 0.5, "caption_dropout": 0.3},
    )


def _train(tmp: Path, name: str, batch: int, resume: Path | None = None, parallel=None, backbone=None) -> None:
    trainer = Trainer(backbone or tiny_backbone(tmp / "tiny.safetensors"), _data(), _config(tmp, name, batch),
                      parallel=parallel)
    if resume is not None:
        trainer.resume(resume)
    trainer.train()


class _BrokenClip(UserError, RuntimeError):
    pass


class _FailsOnSecondCall:
    """The tiny backbone, raising at its second forward pass (on one rank only)."""

    def __init__(self, backbone) -> None:
        self.backbone, self.calls = backbone, 0

    def __getattr__(self, name: str):
        return getattr(self.backbone, name)

    def velocity(self, inp):
        self.calls += 1
        if self.calls == 2:
            raise _BrokenClip("clip_x cannot be read (injected on rank 1)")
        return self.backbone.velocity(inp)


def _rank(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    tmp_path = Path(tmp)
    parallel = DataParallel.start("cpu", f"file://{tmp}/rendezvous", rank, RANKS)
    try:
        backbone = tiny_backbone(tmp_path / "tiny.safetensors")
        _train(tmp_path, "ranks", 1, parallel=parallel, backbone=backbone)
        single_step2 = checkpoint_path(tmp_path / "single", "t", 2)
        _train(tmp_path, "ranks_resumed", 1, single_step2, parallel=parallel, backbone=backbone)
        batch_1_step2 = checkpoint_path(tmp_path / "single_b1", "t", 2)
        _train(tmp_path, "ranks_regrouped", 1, batch_1_step2, parallel=parallel, backbone=backbone)
        failing = _FailsOnSecondCall(backbone) if rank == 1 else backbone
        try:
            _train(tmp_path, "failing", 1, parallel=parallel, backbone=failing)
            outcome = "finished"
        except UserError as err:
            outcome = f"{type(err).__name__}: {err}"
        (tmp_path / f"outcome_{rank}.json").write_text(json.dumps(outcome))
    finally:
        parallel.close()


def _spawn(tmp: Path, limit_s: float = 120, rank_fn=None, waiting: str = "a rank waits for another") -> None:
    """Run ``rank_fn(rank, tmp)`` (default ``_rank``) in RANKS fresh processes; fail the test past ``limit_s``."""
    ctx = mp.start_processes(rank_fn or _rank, args=(str(tmp),), nprocs=RANKS, join=False, start_method="spawn")
    deadline = time.monotonic() + limit_s
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {RANKS} processes did not finish in {limit_s} s ({waiting})")


def _assert_same_lora(got: Path, want: Path) -> None:
    a, b = load_file(str(got)), load_file(str(want))
    assert a.keys() == b.keys()
    moved = 0
    for key in b:
        scale = b[key].norm().item()
        assert (a[key] - b[key]).norm().item() <= 1e-4 * max(scale, 1e-12), key
        moved += key.endswith("lora_B.weight") and scale > 0
    assert moved > 0  # the LoRA trained, so equality is not two untouched initialisations


def _losses(lora: Path) -> list[float]:
    return json.loads(lora.with_name(lora.name.replace(".safetensors", ".state.json")).read_text())["losses"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run one thread each: the same sums, bit for bit
    _train(tmp, "single", 2)
    _train(tmp, "single_b1", 1)
    _spawn(tmp)
    _train(tmp, "single_resumed", 2, checkpoint_path(tmp / "ranks", "t", 2))
    _train(tmp, "single_regrouped", 2, checkpoint_path(tmp / "single_b1", "t", 2))
    yield tmp
    torch.set_num_threads(threads)  # later tests compare with subprocesses that use every core


def test_two_ranks_of_batch_1_train_the_lora_of_one_process_with_batch_2(runs):
    for step in (2, STEPS):
        ranks, single = checkpoint_path(runs / "ranks", "t", step), checkpoint_path(runs / "single", "t", step)
        _assert_same_lora(ranks, single)
        assert _losses(ranks) == pytest.approx(_losses(single), rel=1e-5)


@pytest.mark.parametrize(
    ("name", "reference"),
    [("ranks_resumed", "single"), ("single_resumed", "ranks"), ("ranks_regrouped", "single_regrouped")],
)
def test_resume_with_another_number_of_ranks_continues_as_one_process(runs, name, reference):
    # The first two keep the global batch (2 x 1 after 1 x 2 and back): the uninterrupted run. The third doubles
    # it (2 x 1 after 1 x 1): the rest of the epoch in batches of 2, as one process resumed with batch 2 goes on.
    resumed = checkpoint_path(runs / name, "t", STEPS)
    _assert_same_lora(resumed, checkpoint_path(runs / reference, "t", STEPS))
    assert _losses(resumed) == pytest.approx(_losses(checkpoint_path(runs / reference, "t", STEPS)), rel=1e-5)


def test_a_failing_rank_stops_every_rank_with_its_message(runs):
    rank0, rank1 = (json.loads((runs / f"outcome_{r}.json").read_text()) for r in range(RANKS))
    assert rank1 == "_BrokenClip: clip_x cannot be read (injected on rank 1)"
    assert rank0.startswith("RankFailed: rank 1 of 2 failed in step ")
    assert rank0.endswith("so every rank stopped: _BrokenClip: clip_x cannot be read (injected on rank 1)")
    failed_step = int(rank0.split("failed in step ")[1].split(",")[0])
    # Rank 0 kept the steps completed before the failure, as a cancel does.
    assert checkpoint_path(runs / "failing", "t", failed_step - 1).is_file()
    assert not checkpoint_path(runs / "failing", "t", failed_step).exists()


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_the_ranks_shares_of_a_global_batch_are_its_rows_once_each(world):
    for n in range(9):
        shares = [DataParallel(rank, world).share(n) for rank in range(world)]
        assert [i for s in shares for i in range(n)[s]] == list(range(n))
        assert max(len(range(n)[s]) for s in shares) - min(len(range(n)[s]) for s in shares) <= 1
