"""Resuming with settings that differ from the checkpoint's: the current config wins (``Trainer.resume``)."""

from __future__ import annotations

import logging

import pytest

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.config import ConfigError
from trainer_core.engine.optim import lr_factor
from trainer_core.engine.trainer import Callbacks, Trainer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "tiny_ltx23.safetensors"


class Recording:
    """``TrainingData`` that records which samples the trainer loads, in order."""

    def __init__(self, data) -> None:
        self.data, self.calls = data, []

    def __getattr__(self, name: str):
        return getattr(self.data, name)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        self.calls.append(index)
        return self.data[index]


def _stopped_at(ckpt, data, cfg, step: int):
    trainer = Trainer(tiny_backbone(ckpt), data, cfg)
    result = trainer.train(Callbacks(should_stop=lambda: trainer.run.step >= step))
    assert result.step == step
    return result


def test_learning_rate_and_weight_decay_come_from_the_current_config(ckpt, tmp_path):
    first = _stopped_at(ckpt, synthetic_data(), config(tmp_path), 3)  # learning_rate 1e-3, weight_decay 0.01
    cfg = config(tmp_path, optimization={"learning_rate": 2e-3, "weight_decay": 0.05})
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), cfg)
    trainer.resume(first.lora_path)
    # The linear schedule continues at step 3 with the new peak.
    assert trainer.scheduler.base_lrs == [2e-3]
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [pytest.approx(2e-3 * lr_factor(3, cfg.optimization))]
    assert trainer.scheduler.get_last_lr() == [pytest.approx(2e-3 * lr_factor(3, cfg.optimization))]
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.05]
    lrs = []
    trainer.train(Callbacks(on_step=lambda info: lrs.append(info.lr)))
    assert lrs == [pytest.approx(2e-3 * lr_factor(s, cfg.optimization)) for s in (4, 5, 6)]


@pytest.mark.parametrize(
    ("change", "named"), [({"optimization": {"batch_size": 2}}, "optimization.batch_size"), ({"seed": 7}, "seed")]
)
def test_a_changed_batch_size_or_seed_finishes_the_epoch_with_the_clips_not_yet_seen(
    ckpt, tmp_path, caplog, change, named
):
    data = Recording(synthetic_data(n=5))
    first = _stopped_at(ckpt, data, config(tmp_path), 2)
    seen, data.calls = set(data.calls), []
    trainer = Trainer(tiny_backbone(ckpt), data, config(tmp_path, **change))
    with caplog.at_level(logging.WARNING, logger="trainer_core.engine.trainer"):
        trainer.resume(first.lora_path)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert named in warning and "differs from an uninterrupted run" in warning
    trainer.train()
    # Epoch 0 ends with exactly the three clips the first run had not trained on, then epoch 1 begins.
    assert sorted(data.calls[:3]) == sorted(set(range(5)) - seen)
    assert len(set(data.calls[3:])) == len(data.calls[3:]) > 0


def test_a_changed_seed_rerolls_the_noise(ckpt, tmp_path):
    """With one clip the data order cannot change: only the RNGs tell the two resumed runs apart."""
    first = _stopped_at(ckpt, synthetic_data(n=1), config(tmp_path / "a"), 3)
    losses = {}
    for seed in (0, 7):
        trainer = Trainer(tiny_backbone(ckpt), synthetic_data(n=1), config(tmp_path / f"s{seed}", seed=seed))
        trainer.resume(first.lora_path)
        losses[seed] = trainer.train().losses[3:]
    again = Trainer(tiny_backbone(ckpt), synthetic_data(n=1), config(tmp_path / "again", seed=7))
    again.resume(first.lora_path)
    assert losses[7] != losses[0]
    assert again.train().losses[3:] == losses[7]  # still deterministic


def test_other_training_data_starts_a_new_epoch(ckpt, tmp_path, caplog):
    first = _stopped_at(ckpt, synthetic_data(n=5), config(tmp_path), 2)
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(n=5, seed=1), config(tmp_path))
    with caplog.at_level(logging.WARNING, logger="trainer_core.engine.trainer"):
        trainer.resume(first.lora_path)
    assert "training data" in caplog.text
    assert (trainer.run.epoch, trainer.run.seen) == (1, [])


def test_settings_that_shape_the_checkpoint_cannot_change(ckpt, tmp_path):
    first = _stopped_at(ckpt, synthetic_data(), config(tmp_path), 3)
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path, lora={"rank": 8, "alpha": 4}))
    with pytest.raises(ConfigError, match=r"lora.rank is 8, but t_step_00003.safetensors was trained with 4"):
        trainer.resume(first.lora_path)
