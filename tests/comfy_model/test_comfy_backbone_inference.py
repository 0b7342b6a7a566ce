"""The zero-copy alias swap that lets autograd use weights created under ``torch.inference_mode()``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer_core.comfy.inference import trainable_aliases


def _inference_model() -> nn.Module:
    with torch.inference_mode():
        model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
        model.register_buffer("offset", torch.ones(2))
    return model


def test_aliases_train_without_copies_and_restore_the_originals():
    model = _inference_model()
    originals = {n: t for n, t in [*model.named_parameters(), *model.named_buffers()]}
    x = torch.randn(3, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved"):
        (model(x) + model.offset).sum().backward()
    with trainable_aliases(model) as count:
        assert count == len(originals)
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            assert not t.is_inference() and t.data_ptr() == originals[name].data_ptr()
        assert isinstance(model[0].weight, nn.Parameter) and not model[0].weight.requires_grad
        (model(x) + model.offset).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert t is originals[name]


def test_restores_even_when_the_body_raises():
    model = _inference_model()
    weight = model[0].weight
    with pytest.raises(KeyboardInterrupt), trainable_aliases(model):
        raise KeyboardInterrupt
    assert model[0].weight is weight


def test_a_weight_moved_during_training_stays_where_it_was_moved():
    """If ComfyUI reloads a weight meanwhile (``param.data = ...``), the restored tensor must hold the new data."""
    model = _inference_model()
    with trainable_aliases(model):
        model[2].weight.data = torch.full((2, 8), 3.0)  # what a device move does to the installed Parameter
    restored = model[2].weight
    assert restored.is_inference() and isinstance(restored, nn.Parameter)
    assert torch.equal(restored, torch.full((2, 8), 3.0))


def test_importing_the_comfy_backbone_does_not_import_comfyui():
    import subprocess
    import sys

    code = "import sys, trainer_core.comfy; sys.exit('comfy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
