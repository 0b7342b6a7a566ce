"""Train LTX LoRA on models loaded from files in the layout users download, through ComfyUI's own loader.

The fp8 file has Lightricks' scaled-fp8 layout (float8 block weights, ``weight_scale``/``input_scale``, the
``_quantization_metadata`` header), so ComfyUI builds QuantizedTensor layers from a state-dict load, as it does
under dynamic VRAM, where weights exist only once loaded from a file. The MODEL must be bit-identical afterwards.
"""

from __future__ import annotations

import pytest
import torch

from tests.comfy_models import load_comfy, write_downloaded_layout
from tests.comfy_model.test_comfy_train_node import _settings, _widgets
from tests.engine_support import synthetic_data


def _state(model_patcher) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model_patcher.model.diffusion_model.state_dict().items()}


@pytest.mark.parametrize("dtype", ["fp8", "bf16"])
def test_train_node_leaves_a_file_loaded_model_bit_identical(comfy, tmp_path, monkeypatch, dtype):
    import folder_paths
    from comfy.quant_ops import QuantizedTensor

    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    model = load_comfy(write_downloaded_layout(tmp_path / f"ltx23_{dtype}.safetensors", dtype))
    q = model.model.diffusion_model.transformer_blocks[0].attn1.to_q.weight
    assert isinstance(q, QuantizedTensor) == (dtype == "fp8")
    before = _state(model)
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"]
    with torch.inference_mode():
        out = node.execute(model=model, training_data=synthetic_data(n=1), **_settings(comfy, 2), **_widgets())
    assert len(out.result[2]["loss"]) == 2
    after = _state(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
