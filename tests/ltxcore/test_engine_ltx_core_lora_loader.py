"""Our checkpoint files load in Lightricks' own LoRA loader (ltx-core's SingleGPUModelBuilder fuses them)."""

from __future__ import annotations

import torch
from ltx_core.loader.primitives import LoraPathStrengthAndSDOps
from ltx_core.loader.sd_ops import LTXV_LORA_COMFY_RENAMING_MAP
from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator

from tests.comfy_models import model_input, write_dtype
from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.engine.trainer import Trainer
from trainer_core.lora.adapter import LoraAdapters
from trainer_core.lora.targets import select_targets
from trainer_core.lorafile.read import read_lora_file


def test_saved_lora_fuses_in_ltx_core_with_every_module_matched(tmp_path):
    ckpt = tmp_path / "tiny.safetensors"
    cfg = config(tmp_path, lora={"rank": 4, "alpha": 4}, optimization={"steps": 3, "learning_rate": 2e-2})
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(n=1), cfg)
    lora_path = trainer.train().lora_path

    # ltx-core fuses only into bf16/fp8 weights, so compare in bf16.
    ckpt16 = write_dtype(ckpt, tmp_path / "tiny_bf16.safetensors", torch.bfloat16)
    builder = SingleGPUModelBuilder(
        model_class_configurator=LTXModelConfigurator,
        model_path=str(ckpt16),
        model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP,
        loras=(LoraPathStrengthAndSDOps(str(lora_path), 1.0, LTXV_LORA_COMFY_RENAMING_MAP),),
    )
    fused = builder.build(device=torch.device("cpu"), dtype=torch.bfloat16)
    backbone = tiny_backbone(ckpt16, dtype=torch.bfloat16)
    base = {k: v.clone() for k, v in backbone.transformer.state_dict().items()}
    changed = {k.removesuffix(".weight") for k, v in fused.state_dict().items() if not torch.equal(v, base[k])}
    assert changed == set(trainer.adapters.names)  # every LoRA module fused, nothing else

    text = backbone.prepare_text(synthetic_data(n=1)[0].text.to(torch.bfloat16))
    inp = model_input(text, seed=1, audio=True, dtype=torch.bfloat16)
    with torch.no_grad():
        plain, _ = backbone.velocity(inp)
        adapters = LoraAdapters(select_targets(backbone.lora_targets(), "all_attention"), 4, 4.0)
        adapters.load_comfy_state_dict(read_lora_file(lora_path)[0])
        with adapters.attached():
            hooked, _ = backbone.velocity(inp)
        backbone.transformer.load_state_dict(fused.state_dict())
        merged, _ = backbone.velocity(inp)
    effect = (hooked.float() - plain.float()).abs().max()
    assert effect > 0.05
    assert (merged.float() - hooked.float()).abs().max() < 0.1 * effect
