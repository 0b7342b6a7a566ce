"""Optimizer-state files: a name ComfyUI's LoRA menus do not list, and the old name still resumes."""

from __future__ import annotations

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.engine.trainer import Trainer


def test_checkpoints_of_earlier_versions_with_state_safetensors_still_resume(tmp_path):
    ckpt = tmp_path / "tiny.safetensors"
    first = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path, optimization={"steps": 3})).train()
    new = first.lora_path.with_name("t_step_00003.state.tensors")
    assert new.is_file()
    new.rename(first.lora_path.with_name("t_step_00003.state.safetensors"))  # as earlier versions named it
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path, optimization={"steps": 6}))
    trainer.resume(first.lora_path)
    assert trainer.run.step == 3 and trainer.run.losses == first.losses
