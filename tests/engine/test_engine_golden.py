"""Golden-loss regression: a fixed-seed run on the tiny model must keep its loss sequence.

A refactor that changes the training math (noise, sigma, masking, dropout draws, LoRA init, optimizer) changes
these numbers. If a change is intended, re-record them and say why in the commit.
"""

from __future__ import annotations

import pytest

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.engine.trainer import Trainer

GOLDEN = [4.903970718383789, 4.664425849914551, 4.747570037841797, 4.824726104736328]


def test_fixed_seed_loss_sequence_is_unchanged(tmp_path):
    cfg = config(
        tmp_path,
        optimization={"steps": 4, "learning_rate": 1e-2},
        recipe={"first_frame_p": 0.5, "caption_dropout": 0.25},
    )
    losses = Trainer(tiny_backbone(tmp_path / "t.safetensors"), synthetic_data(n=2), cfg).train().losses
    assert losses == pytest.approx(GOLDEN, rel=1e-5)
