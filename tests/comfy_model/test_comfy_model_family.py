"""The family the Train node reads from ComfyUI's loaded MODEL (``comfy.training.model_family_of``).

Tiny single files loaded by ComfyUI's own checkpoint loader: LTX-2 and LTX-2.3 are told apart and recorded; LTX-2.5 is
refused both from its header config (``ff_bias`` / ``audio_ff_bias`` false, which ComfyUI builds the MODEL from: no FFN
biases) and from its keyframe position embedding. A file without FFN biases whose header does not say so is built
with them by ComfyUI and reads as 2.3: what README says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny checkpoint")

from trainer_core.ltxcore.tiny import write_tiny_checkpoint  # noqa: E402


def variant(src: Path, dst: Path, *, header: dict | None = None, drop_ffn_bias: bool = False,
            keyframe: bool = False) -> Path:
    """``src`` with its header's transformer config updated by ``header``, the transformer blocks' FFN biases left
    out, or a keyframe position embedding added."""
    with safe_open(str(src), "pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["config"])
    config["transformer"].update(header or {})
    state = {k: v for k, v in load_file(str(src)).items()
             if not (drop_ffn_bias and ".transformer_blocks." in k and ".ff.net." in k and k.endswith(".bias"))}
    if keyframe:
        width = config["transformer"]["num_attention_heads"] * config["transformer"]["attention_head_dim"]
        state["model.diffusion_model.keyframes_abs_pos_embedding"] = torch.zeros(1, width)
    save_file(state, str(dst), metadata={**metadata, "config": json.dumps(config)})
    return dst


@pytest.fixture(scope="module")
def files(comfy, tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    ltx23 = write_tiny_checkpoint(root / "ltx23.safetensors")
    return {
        "ltx-2.3": ltx23,
        "ltx-2": write_tiny_checkpoint(root / "ltx2.safetensors", family="ltx-2"),
        "2.5 header": variant(ltx23, root / "ltx25.safetensors", header={"ff_bias": False, "audio_ff_bias": False},
                              drop_ffn_bias=True),
        "2.5 keyframes": variant(ltx23, root / "ltx25_keyframes.safetensors", keyframe=True),
        "no biases, header silent": variant(ltx23, root / "silent.safetensors", drop_ffn_bias=True),
    }


def family_of(path: Path) -> str:
    from tests.comfy_models import load_comfy
    from trainer_core.comfy.training import model_family_of

    return model_family_of(load_comfy(path))


@pytest.mark.parametrize("name", ["ltx-2.3", "ltx-2"])
def test_supported_families_are_recorded(files, name):
    assert family_of(files[name]) == name


def test_ltx25_from_the_config_comfyui_built_the_model_from(files):
    from trainer_core.comfy.lora import model_weight_shapes
    from trainer_core.lorafile.family import UnsupportedModelError, model_family

    with pytest.raises(UnsupportedModelError, match=r"ComfyUI's MODEL is LTX-2\.5 \(ff_bias and audio_ff_bias false "
                       r"in its config and no FFN biases \(LTX-2\.5\)\): LTX-2\.5 is not supported yet"):
        family_of(files["2.5 header"])
    # The config alone decides, whatever the weights show (ComfyUI built this MODEL with FFN biases).
    from tests.comfy_models import load_comfy

    shapes = model_weight_shapes(load_comfy(files["ltx-2.3"]))
    assert model_family(shapes, {"audio_ff_bias": False}).family == "ltx-2.5"
    assert model_family(shapes, {"ff_bias": True}).family == "ltx-2.3"


def test_ltx25_from_its_keyframe_embedding(files):
    from trainer_core.lorafile.family import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match=r"keyframe position embedding \(LTX-2\.5\)"):
        family_of(files["2.5 keyframes"])


def test_missing_biases_the_header_does_not_declare_read_as_ltx23(files):
    """ComfyUI builds FFN biases unless the header config says ff_bias false: nothing in the MODEL is left to see."""
    assert family_of(files["no biases, header silent"]) == "ltx-2.3"


def test_headless_checkpoint_check_reads_the_header_config(files):
    from trainer_core.lorafile.family import UnsupportedModelError
    from trainer_core.lorafile.match import refuse_unsupported_checkpoint

    refuse_unsupported_checkpoint(files["ltx-2.3"])
    with pytest.raises(UnsupportedModelError, match=r"ff_bias and audio_ff_bias false in its config"):
        refuse_unsupported_checkpoint(files["2.5 header"])
