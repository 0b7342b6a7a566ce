"""FSDP2 sharding of the frozen base weights (``distributed.strategy: fsdp``) on the CPU: 2 gloo processes.

One process with batch 2 is the reference, as in ``test_data_parallel``. One spawn of 2 processes loads the tiny
model as the CLI does (the transformer split on the meta device by ``ShardedDataParallel.shard``, then each rank's
rows read from the file), trains with batch 1 each from scratch with per-block gradient checkpointing (each block's
weights are gathered again for its recompute), then resumes from the reference's step-2 checkpoint and from a
batch-1 process's; the reference process then resumes from the sharded run's step-2 checkpoint. 3 clips in batches
of 2 make every epoch end in a batch of 1, where rank 1 has no rows and still has to run the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors
import torch
import yaml
from safetensors.torch import load_file

from tests.distributed.test_data_parallel import STEPS, _assert_same_lora, _data, _losses, _spawn
from tests.distributed.test_torchrun_cli import _config
from tests.engine_support import config, tiny_backbone, write_cache
from trainer_core.cli import main
from trainer_core.config import ConfigError
from trainer_core.engine.checkpoints import checkpoint_path, list_checkpoints
from trainer_core.engine.distributed import ShardedDataParallel
from trainer_core.engine.trainer import Trainer
from trainer_core.ltxcore.backbone import LtxCoreBackbone
from trainer_core.ltxcore.model import TRANSFORMER_PREFIX
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

RANKS = 2
REPO = Path(__file__).resolve().parents[2]


def _train(tmp: Path, name: str, batch: int, backbone, resume: Path | None = None, parallel=None) -> None:
    cfg = config(
        tmp,
        output_dir=str(tmp / name),
        optimization={"steps": STEPS, "learning_rate": 1e-2, "batch_size": batch},
        checkpoints={"every": 2},
        recipe={"first_frame_p": 0.5, "caption_dropout": 0.3},
        memory={"gradient_checkpointing": parallel is not None},  # the reference runs without
    )
    trainer = Trainer(backbone, _data(), cfg, parallel=parallel)
    if resume is not None:
        trainer.resume(resume)
    trainer.train()


class _CountingReads:
    """``safetensors.safe_open`` that counts the elements this process reads of each key."""

    def __init__(self, read: Counter, *args, **kwargs) -> None:
        self.read, self.file = read, _SAFE_OPEN(*args, **kwargs)

    def __enter__(self) -> _CountingReads:
        self.file.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.file.__exit__(*exc)

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def get_tensor(self, key: str) -> torch.Tensor:
        tensor = self.file.get_tensor(key)
        self.read[key] += tensor.numel()
        return tensor

    def get_slice(self, key: str):
        whole, read = self.file.get_slice(key), self.read

        class Rows:
            def __getitem__(self, index) -> torch.Tensor:
                tensor = whole[index]
                read[key] += tensor.numel()
                return tensor

        return Rows()


_SAFE_OPEN = safetensors.safe_open


def _rank(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    tmp_path = Path(tmp)
    parallel = ShardedDataParallel.start("cpu", f"file://{tmp}/rendezvous", rank, RANKS)
    try:
        # Loaded as the CLI loads it: split on the meta device, then this rank's rows read from the file.
        read: Counter = Counter()
        safetensors.safe_open = lambda *args, **kwargs: _CountingReads(read, *args, **kwargs)
        try:
            backbone = LtxCoreBackbone.from_checkpoint(tmp_path / "tiny.safetensors", dtype=torch.float32,
                                                       split=lambda blocks, root: parallel.shard(blocks, root, "cpu"))
        finally:
            safetensors.safe_open = _SAFE_OPEN
        whole = dict(tiny_backbone(tmp_path / "tiny.safetensors").transformer.named_parameters())
        params = dict(backbone.transformer.named_parameters())
        held = {
            "dtensors": sum(type(p).__name__ == "DTensor" for p in params.values()),
            "params": len(params),
            "local": sum(p.to_local().numel() for p in params.values()),
            "total": sum(p.numel() for p in params.values()),
            "read": sum(read[TRANSFORMER_PREFIX + name] for name in params),
            "as_file": all(torch.equal(p.full_tensor(), whole[name]) for name, p in params.items()),  # gathers
        }
        (tmp_path / f"held_{rank}.json").write_text(json.dumps(held))
        _train(tmp_path, "sharded", 1, backbone, parallel=parallel)
        _train(tmp_path, "sharded_resumed", 1, backbone, checkpoint_path(tmp_path / "single", "t", 2), parallel)
        _train(tmp_path, "sharded_regrouped", 1, backbone, checkpoint_path(tmp_path / "single_b1", "t", 2), parallel)
    finally:
        parallel.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("fsdp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run one thread each: the same sums, bit for bit
    backbone = tiny_backbone(tmp / "tiny.safetensors")
    _train(tmp, "single", 2, backbone)
    _train(tmp, "single_b1", 1, backbone)
    _spawn(tmp, 180, _rank, "a rank waits in a weight gather")
    _train(tmp, "single_resumed", 2, backbone, checkpoint_path(tmp / "sharded", "t", 2))
    _train(tmp, "single_regrouped", 2, backbone, checkpoint_path(tmp / "single_b1", "t", 2))
    yield tmp
    torch.set_num_threads(threads)  # later tests compare with subprocesses that use every core


def test_each_rank_loads_and_holds_only_its_half_of_the_frozen_base_weights(runs):
    held = [json.loads((runs / f"held_{r}.json").read_text()) for r in range(RANKS)]
    for h in held:
        assert h["dtensors"] == h["params"]  # every transformer weight, blocks and the rest, is sharded
        assert h["local"] <= h["total"] / RANKS + h["params"]  # dim-0 chunks: at most one row over half
        assert h["read"] == h["local"]  # read from the file: its own rows, nothing of the other rank's
        assert h["as_file"]  # the shards put together are the checkpoint's weights
    assert sum(h["local"] for h in held) == held[0]["total"]


def test_sharded_ranks_of_batch_1_train_the_lora_of_one_process_with_batch_2(runs):
    for step in (2, STEPS):
        sharded, single = checkpoint_path(runs / "sharded", "t", step), checkpoint_path(runs / "single", "t", step)
        _assert_same_lora(sharded, single)
        assert _losses(sharded) == pytest.approx(_losses(single), rel=1e-5)


def test_split_loading_converts_to_the_model_dtype_and_gives_each_of_3_ranks_its_rows(tmp_path):
    # The float32 file loaded as bfloat16 over 3 processes, played one after another by this process: torch's fake
    # process group (no communication) gives each its rank in a world of 3, and loading needs no collective.
    from torch.testing._internal.distributed.fake_pg import FakeStore

    path = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    whole = dict(LtxCoreBackbone.from_checkpoint(path, dtype=torch.bfloat16).transformer.named_parameters())
    assert any(p.shape[0] % 3 for p in whole.values())  # uneven splits: the last rank's shard is shorter, or empty
    shards: dict[str, list[torch.Tensor]] = {name: [] for name in whole}
    for rank in range(3):
        torch.distributed.init_process_group("fake", rank=rank, world_size=3, store=FakeStore())
        try:
            parallel = ShardedDataParallel(rank, 3)
            backbone = LtxCoreBackbone.from_checkpoint(path, dtype=torch.bfloat16,
                                                       split=lambda blocks, root: parallel.shard(blocks, root, "cpu"))
            for name, param in backbone.transformer.named_parameters():
                shards[name].append(param.to_local())
        finally:
            torch.distributed.destroy_process_group()
    for name, parts in shards.items():
        per = -(-whole[name].shape[0] // 3)  # FSDP2's dim-0 chunks: ceil(rows / 3), the last ones shorter or empty
        for rank, part in enumerate(parts):
            assert part.dtype == torch.bfloat16, name
            assert torch.equal(part, whole[name][rank * per : (rank + 1) * per]), (name, rank)


@pytest.mark.parametrize(
    ("name", "reference"),
    [("sharded_resumed", "single"), ("single_resumed", "sharded"), ("sharded_regrouped", "single_regrouped")],
)
def test_resume_between_one_process_and_sharded_ranks_continues_as_one_process(runs, name, reference):
    # The first two keep the global batch (2 x 1 after 1 x 2 and back): the uninterrupted run. The third doubles
    # it (2 x 1 after 1 x 1): it goes on as one process resumed with batch 2 does.
    resumed, ref = checkpoint_path(runs / name, "t", STEPS), checkpoint_path(runs / reference, "t", STEPS)
    _assert_same_lora(resumed, ref)
    assert _losses(resumed) == pytest.approx(_losses(ref), rel=1e-5)


def test_torchrun_with_strategy_fsdp_shards_and_trains_like_one_process(tmp_path):
    write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    write_cache(tmp_path / "cache", [24.0, 24.0, 24.0])
    sharded = _config(tmp_path, "ranks", 1, distributed={"strategy": "fsdp"})
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "trainer_core",
         "train", str(sharded)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("frozen base weights split over 2 processes (FSDP2)") == 1, out.stderr
    assert out.stdout.count("completed at step 2") == 1, out.stdout
    ranks = dict(list_checkpoints(tmp_path / "ranks", "cli"))
    assert yaml.safe_load((tmp_path / "ranks" / "config.yaml").read_text())["distributed"] == {"strategy": "fsdp"}

    assert main(["train", str(_config(tmp_path, "single", 2))]) == 0
    single = load_file(str(dict(list_checkpoints(tmp_path / "single", "cli"))[2]))
    got = load_file(str(ranks[2]))
    assert got.keys() == single.keys()
    # Over the whole LoRA, as in test_torchrun_cli (one near-zero-gradient layer amplifies rounding noise).
    diff = sum((got[k] - single[k]).pow(2).sum() for k in single).sqrt()
    assert diff <= 1e-4 * sum(t.pow(2).sum() for t in single.values()).sqrt()


def test_fsdp_with_previews_is_refused_before_the_model_loads(tmp_path, capsys):
    # No checkpoint and no cache exist: the refusal comes before either is looked at.
    path = _config(tmp_path, "run", 1, distributed={"strategy": "fsdp"}, preview={"every": 2})
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "distributed.strategy is fsdp and preview.every is 2" in err
    assert "set preview.every: 0" in err
    assert not (tmp_path / "run").exists()


def test_strategy_is_one_of_ddp_and_fsdp(tmp_path):
    with pytest.raises(ConfigError, match="distributed.strategy"):
        config(tmp_path, distributed={"strategy": "zero3"})
