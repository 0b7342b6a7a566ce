"""On a CUDA machine only: the Train node under ComfyUI's dynamic VRAM (comfy-aimdo, ModelPatcherDynamic), as
ComfyUI's main.py sets it up, on tiny models loaded from files (scaled fp8 and bf16). Checks the MODEL is
bit-identical afterwards and the live memory figure is at least torch's own peak.

Not marked ``comfyui`` (it boots ComfyUI itself, on the GPU): run it alone, in its own process:
    COMFYUI_PATH=.gpu/ComfyUI python3 -m pytest -q tests/gpu -m cuda
"""

from __future__ import annotations

import sys

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def dynamic_comfy():
    from tests.comfy_boot import REPO, find_comfyui

    root = find_comfyui()
    if root is None:
        pytest.fail("no ComfyUI tree: set COMFYUI_PATH")
    sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy_aimdo.control

    comfy_aimdo.control.init()
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher

    if not comfy_aimdo.control.init_devices([mm.get_torch_device().index or 0]):
        pytest.fail("comfy-aimdo did not initialise on this GPU")
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic  # what main.py does
    comfy.memory_management.aimdo_enabled = True
    import asyncio

    import utils.install_util  # noqa: F401 - the top-level utils package must win over comfy/utils.py

    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    assert asyncio.run(nodes.load_custom_node(str(REPO), module_parent="custom_nodes"))
    return sys.modules[str(REPO).replace(".", "_x_")]


@pytest.mark.parametrize("dtype", ["fp8", "bf16"])
def test_train_node_under_dynamic_vram(dynamic_comfy, tmp_path, monkeypatch, dtype):
    import folder_paths

    from tests.comfy_model.test_comfy_train_node import _settings, _widgets
    from tests.comfy_models import load_comfy, write_downloaded_layout
    from tests.engine_support import synthetic_data

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    model = load_comfy(write_downloaded_layout(tmp_path / f"ltx23_{dtype}.safetensors", dtype))
    assert type(model).__name__ == "ModelPatcherDynamic"
    before = {k: v.detach().cpu().clone() for k, v in model.model.diffusion_model.state_dict().items()}
    node = dynamic_comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"]
    points = []
    training = sys.modules[dynamic_comfy.__name__ + ".trainer_core.comfy.training"]
    original = training.NodeProgress.on_step
    monkeypatch.setattr(training.NodeProgress, "on_step",
                        lambda self, info: (points.append(self.memory.read()), original(self, info))[1])
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        node.execute(model=model, training_data=synthetic_data(n=1), **_settings(dynamic_comfy, 3), **_widgets())
    after = {k: v.detach().cpu() for k, v in model.model.diffusion_model.state_dict().items()}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    peak, source = points[-1]
    print(f"{dtype}: node figure {peak:.3f} GiB from {source}; torch allocated peak "
          f"{torch.cuda.max_memory_allocated() / 2**30:.3f} GiB")
    assert source in ("driver", "torch+aimdo", "torch") and peak >= torch.cuda.max_memory_reserved() / 2**30 - 1e-6
