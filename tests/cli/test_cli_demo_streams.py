"""The demo caches no audio (its checkpoint has no audio VAE, though its clips have sound): its LoRA is video only,
with no all-zero layer, and its metadata says so."""

from __future__ import annotations

from trainer_core.demo import run_demo
from trainer_core.engine.modes import AUDIO_STREAM_LAYERS
from trainer_core.lorafile import metadata as md
from trainer_core.lorafile.read import read_lora_file


def test_demo_writes_no_all_zero_layer_and_says_audio_off(tmp_path):
    summary = run_demo(tmp_path / "demo", steps=2)
    tensors, meta = read_lora_file(summary.lora_path)
    b = {k: v for k, v in tensors.items() if k.endswith(md.LORA_B)}
    assert b and all(v.any() for v in b.values()), [k for k, v in b.items() if not v.any()]
    assert not [k for k in tensors if any(f".{layer}" in k for layer in AUDIO_STREAM_LAYERS)]
    assert (meta[md.AUDIO], meta[md.VIDEO]) == ("off", "generate")
