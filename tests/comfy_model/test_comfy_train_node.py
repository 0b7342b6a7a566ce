"""Train LTX LoRA inside a real ComfyUI v0.33 on a tiny LTX-2.3 checkpoint loaded by ComfyUI's own loader."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from tests.comfy_models import stock_velocity
from tests.engine_support import config, synthetic_data
from trainer_core.backbone import TextContext
from trainer_core.engine.trainer import Trainer
from trainer_core.ltxcore.backbone import LtxCoreBackbone


def _widgets(**over):
    values = {"seed": 0, "name": "itest", "every": 3, "keep_last": 0, "config_yaml": "", "resume_from": ""}
    values.update(over)
    return values


def _settings(comfy, steps: int):
    mod = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    return {
        "lora": mod.LoraSettings(rank=4, alpha=4),
        "optimization": mod.OptimizationSettings(steps=steps, learning_rate=1e-3),
        "memory": mod.MemorySettings(gradient_checkpointing=True, mixed_precision="no"),
    }


def _probe(model_patcher):
    """Output of ComfyUI's own inference on a fixed input, with the patcher's weights applied."""
    from tests.comfy_models import model_input

    g = torch.Generator().manual_seed(9)
    embeds = torch.randn(1, 6, 96, generator=g)
    text = TextContext(torch.zeros(1, 1, 64), torch.zeros(1, 1, 32))  # only shapes matter for model_input
    inp = model_input(text, seed=3, audio=True)
    model_patcher.patch_model()
    try:
        return stock_velocity(model_patcher, inp, embeds)
    finally:
        model_patcher.unpatch_model()


def test_train_node_saves_a_lora_that_stock_comfyui_loads_identically(comfy, setup, caplog):
    import nodes as comfy_nodes

    node, model, _, loras = setup
    before = _probe(model)
    data = synthetic_data(n=2)
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        out = node.execute(model=model, training_data=data, **_settings(comfy, 6), **_widgets())
    patched, lora_path, loss = out.result
    assert lora_path.endswith("itest_step_00006.safetensors") and len(loss["loss"]) == 6
    assert sorted(p.name for p in (loras / "itest").glob("*_step_*[0-9].safetensors")) == [
        "itest_step_00003.safetensors",
        "itest_step_00006.safetensors",
    ]
    # The input MODEL is untouched, bit for bit.
    assert all(torch.equal(a, b) for a, b in zip(before, _probe(model), strict=True))
    # Stock LoraLoaderModelOnly loads every key and gives the same model as the node's output.
    caplog.set_level(logging.WARNING)
    with torch.inference_mode():
        (stock,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(
            model, "itest/itest_step_00006.safetensors", 1.0
        )
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    assert len(stock.patches) == 2 * 6 * 4
    ours, theirs = _probe(patched), _probe(stock)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(ours, before, strict=True))  # the LoRA does something


def test_loss_matches_the_ltx_core_backbone(comfy, setup, tmp_path):
    node, model, ckpt, _ = setup
    data = synthetic_data(n=2, audio=False)  # video-only: both backbones follow the same reference math
    with torch.inference_mode():
        out = node.execute(model=model, training_data=data, **_settings(comfy, 4), **_widgets(every=100))
    comfy_losses = out.result[2]["loss"]
    cfg = config(
        tmp_path / "ref",
        optimization={"steps": 4, "learning_rate": 1e-3},
        memory={"gradient_checkpointing": True, "mixed_precision": "no"},
        checkpoints={"every": 100},
        name="itest",
    )
    reference = Trainer(LtxCoreBackbone.from_checkpoint(ckpt, dtype=torch.float32), data, cfg).train().losses
    assert comfy_losses == pytest.approx(reference, rel=1e-4)


def test_cancel_mid_run_saves_a_checkpoint_and_returns(comfy, setup):
    from comfy import model_management as mm
    from comfy import utils as comfy_utils

    node, model, _, loras = setup
    before = _probe(model)
    comfy_utils.set_progress_bar_global_hook(lambda *a, **k: mm.interrupt_current_processing(True))
    try:
        with torch.inference_mode():
            out = node.execute(
                model=model, training_data=synthetic_data(n=2), **_settings(comfy, 6), **_widgets(every=100)
            )
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    _, lora_path, loss = out.result
    assert len(loss["loss"]) == 1 and lora_path.endswith("itest_step_00001.safetensors")
    assert (loras / "itest" / "itest_step_00001.state.json").is_file()  # resumable
    assert all(torch.equal(a, b) for a, b in zip(before, _probe(model), strict=True))


def test_direct_latent_and_conditioning_inputs(comfy, setup):
    node, model, _, _ = setup
    latent = {"samples": torch.randn(1, 128, 2, 2, 2)}
    conditioning = [[torch.randn(1, 5, 96), {"frame_rate": 24.0}]]
    with torch.inference_mode():
        out = node.execute(
            model=model, latent=latent, conditioning=conditioning, **_settings(comfy, 2), **_widgets(every=100)
        )
    assert len(out.result[2]["loss"]) == 2
    with pytest.raises(Exception, match="training_data"):
        node.execute(model=model, **_settings(comfy, 2), **_widgets())


def test_config_yaml_of_a_run_reproduces_it(comfy, setup):
    node, model, _, loras = setup
    data = synthetic_data(n=2)
    with torch.inference_mode():
        first = node.execute(model=model, training_data=data, **_settings(comfy, 3), **_widgets(every=100))
        # Widgets and sockets differ now (defaults), but the YAML carries every setting of the first run.
        again = node.execute(
            model=model, training_data=data, **_widgets(name="again", config_yaml=str(loras / "itest" / "config.yaml"))
        )
    assert again.result[2]["loss"] == first.result[2]["loss"]
    assert again.result[1].endswith("again/again_step_00003.safetensors")


def _patched_weights(patcher) -> dict[str, torch.Tensor]:
    import comfy.lora

    sd = patcher.model.state_dict()
    return {k: comfy.lora.calculate_weight(p, sd[k].float().clone(), k) for k, p in patcher.patches.items()}


def test_train_node_model_output_is_the_checked_loaders(comfy, setup):
    """The MODEL output goes through the checked loader: same patches, the file's metadata attached."""
    node, model, _, _ = setup
    with torch.inference_mode():
        out = node.execute(model=model, training_data=synthetic_data(n=2), **_settings(comfy, 2), **_widgets())
    patched, lora_path, _ = out.result
    load = comfy.NODE_CLASS_MAPPINGS["LtxLoraLoadChecked"]
    checked, report = load.execute(model, "itest/itest_step_00002.safetensors", 1.0, 1.0, False).result
    meta = patched.get_attachment("lora_metadata")
    assert meta == checked.get_attachment("lora_metadata") and meta["ltxlora.base_model"] == "ltx-2.3"
    ours, theirs = _patched_weights(patched), _patched_weights(checked)
    assert ours.keys() == theirs.keys() and len(ours) == 2 * 6 * 4
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert "Problems" not in report and not model.patches


def test_train_node_model_output_refuses_like_the_checked_loader(comfy, setup, monkeypatch):
    """A LoRA whose metadata names another family is refused by the Train node's MODEL output as by the loader."""
    node, model, _, _ = setup
    training = sys.modules[comfy.__name__ + ".trainer_core.comfy.training"]
    mismatch = sys.modules[comfy.__name__ + ".trainer_core.lorafile.fit"].LoraMismatchError
    monkeypatch.setattr(training, "model_family_of", lambda patcher: "ltx-2")  # metadata claims LTX-2
    with torch.inference_mode(), pytest.raises(mismatch) as refused:
        node.execute(model=model, training_data=synthetic_data(n=2), **_settings(comfy, 1), **_widgets(every=100))
    load = comfy.NODE_CLASS_MAPPINGS["LtxLoraLoadChecked"]
    with pytest.raises(mismatch) as also:
        load.execute(model, "itest/itest_step_00001.safetensors", 1.0, 1.0, False)
    assert "this LoRA is for LTX-2 (19B)" in str(refused.value)
    assert str(refused.value).replace("itest_step_00001.safetensors", "X") == str(also.value).replace(
        "itest/itest_step_00001.safetensors", "X"
    )


def test_a_diverging_run_raises_the_packs_user_error(comfy, setup):
    node, model, _, loras = setup
    data = synthetic_data(n=2)
    for sample in data.samples:
        sample.video.fill_(float("nan"))  # the data check stops the first step, naming the clip
    non_finite = sys.modules[comfy.__name__ + ".trainer_core.engine.trainer"].NonFiniteLossError
    user_error = sys.modules[comfy.__name__ + ".trainer_core.errors"].UserError
    with torch.inference_mode(), pytest.raises(non_finite) as caught:
        node.execute(model=model, training_data=data, **_settings(comfy, 3), **_widgets(every=100))
    assert isinstance(caught.value, user_error)  # ComfyUI shows the message; the CLI prints one error: line
    message = str(caught.value)
    assert "its cached video latent holds NaN or Inf values; training stopped at step 1" in message
    assert message.startswith("clip clip_")
