"""Key layouts: detection, lossless conversion in every direction, alpha written or folded, dtype, metadata."""

from __future__ import annotations

import pytest
import torch

from trainer_core.lorafile import LoraFileError, lora_metadata, read_lora_file, save_lora_file
from trainer_core.lorafile import metadata as md
from trainer_core.lorafile.layouts import (
    LAYOUTS,
    LoraModule,
    ParsedLora,
    conversion_record,
    convert_file,
    detect_layout,
    holds_conversion,
    kohya_name,
    module_from_kohya,
    parse_lora,
    to_layout,
)

# (module, in, out) of a tiny LTX-2.3-like block: all six attentions, the gate, both FFNs, a top-level layer.
MODULES = [
    *((f"transformer_blocks.1.{a}.{p}", 64, 64) for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v")),
    ("transformer_blocks.1.attn1.to_out.0", 64, 64),
    ("transformer_blocks.1.attn1.to_gate_logits", 64, 2),
    ("transformer_blocks.1.audio_attn1.to_q", 32, 32),
    ("transformer_blocks.1.audio_to_video_attn.to_k", 32, 64),
    ("transformer_blocks.1.video_to_audio_attn.to_out.0", 32, 32),
    ("transformer_blocks.1.ff.net.0.proj", 64, 256),
    ("transformer_blocks.1.audio_ff.net.2", 128, 32),
    ("av_ca_v2a_gate_adaln_single.emb.timestep_embedder.linear_1", 16, 32),
    ("audio_patchify_proj", 128, 32),
]


def make_parsed(rank: int = 4, alpha: float | None = 2.0, seed: int = 0) -> ParsedLora:
    g = torch.Generator().manual_seed(seed)
    mods = {
        name: LoraModule(torch.randn(rank, i, generator=g), torch.randn(o, rank, generator=g), alpha)
        for name, i, o in MODULES
    }
    return ParsedLora("comfy", mods, [])


def deltas(parsed: ParsedLora) -> dict[str, torch.Tensor]:
    return {n: m.delta() for n, m in parsed.modules.items()}


def assert_same_deltas(a: ParsedLora, b: ParsedLora, atol: float = 1e-5) -> None:
    assert a.modules.keys() == b.modules.keys()
    for name, d in deltas(a).items():
        torch.testing.assert_close(b.modules[name].delta(), d, atol=atol, rtol=1e-5, msg=name)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("alpha", [2.0, None])
@pytest.mark.parametrize("fold", [False, True])
def test_round_trip_every_layout(layout, alpha, fold):
    original = make_parsed(alpha=alpha)
    tensors = to_layout(original, layout, fold_alpha=fold)
    assert detect_layout(tensors) == layout
    back = parse_lora(tensors)
    assert back.layout == layout and not back.unsupported
    assert_same_deltas(original, back)
    assert_same_deltas(original, parse_lora(to_layout(back, "comfy")))


def test_alpha_is_written_as_0d_float32_or_folded():
    parsed = make_parsed(rank=4, alpha=2.0)
    name = "transformer_blocks.1.attn1.to_q"
    comfy = to_layout(parsed, "comfy")
    alpha = comfy[f"diffusion_model.{name}.alpha"]
    assert alpha.dim() == 0 and alpha.dtype == torch.float32 and alpha.item() == 2.0
    assert torch.equal(comfy[f"diffusion_model.{name}.lora_B.weight"], parsed.modules[name].up)
    folded = to_layout(parsed, "comfy", fold_alpha=True)
    assert folded[f"diffusion_model.{name}.alpha"].item() == 4.0  # alpha = rank: scale 1
    torch.testing.assert_close(folded[f"diffusion_model.{name}.lora_B.weight"], parsed.modules[name].up * 0.5)
    peft = to_layout(parsed, "peft")
    assert not any(k.endswith(".alpha") for k in peft)
    assert all(k.startswith("base_model.model.") for k in peft)
    assert all(k.startswith("transformer.") for k in to_layout(parsed, "diffusers"))


def test_kohya_names_and_decoding():
    assert kohya_name("transformer_blocks.3.audio_to_video_attn.to_out.0") == (
        "lora_unet_transformer_blocks_3_audio_to_video_attn_to_out_0"
    )
    for name, _, _ in MODULES:
        assert module_from_kohya(kohya_name(name)) == name
    # a name outside the vocabulary resolves exactly when the model's module names are given
    custom = "my_block.some_layer"
    assert module_from_kohya(kohya_name(custom)) != custom
    assert module_from_kohya(kohya_name(custom), [custom, "other"]) == custom


def test_reads_other_tools_spellings():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 8, generator=g), torch.randn(8, 2, generator=g)
    peft_raw = {
        "base_model.model.transformer_blocks.0.attn1.to_q.lora_A.default.weight": a,
        "base_model.model.transformer_blocks.0.attn1.to_q.lora_B.default.weight": b,
    }
    comfy_trainer = {
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_down.weight": a,
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_up.weight": b,
        "diffusion_model.transformer_blocks.0.attn1.to_q.alpha": torch.tensor(1.0),
    }
    bare = {"transformer_blocks.0.attn1.to_q.lora_A.weight": a, "transformer_blocks.0.attn1.to_q.lora_B.weight": b}
    for tensors, layout, scale in ((peft_raw, "peft", 1.0), (comfy_trainer, "comfy", 0.5), (bare, "bare", 1.0)):
        parsed = parse_lora(tensors)
        assert parsed.layout == layout
        torch.testing.assert_close(parsed.modules["transformer_blocks.0.attn1.to_q"].delta(), scale * b @ a)


def test_dtype_choice():
    parsed = make_parsed()
    out = to_layout(parsed, "comfy", dtype=torch.bfloat16)
    weights = [v for k, v in out.items() if not k.endswith(".alpha")]
    assert all(v.dtype == torch.bfloat16 for v in weights)
    assert all(v.dtype == torch.float32 for k, v in out.items() if k.endswith(".alpha"))
    assert_same_deltas(parsed, parse_lora(out), atol=0.5)  # bf16 keeps ~3 significant digits


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"diffusion_model.a.lora_A.weight": torch.zeros(2, 4)}, "only down"),
        (
            {
                "diffusion_model.a.lora_A.weight": torch.zeros(2, 4),
                "lora_unet_b.lora_up.weight": torch.zeros(4, 2),
                "lora_unet_b.lora_down.weight": torch.zeros(2, 4),
                "diffusion_model.a.lora_B.weight": torch.zeros(4, 2),
            },
            "mixes key layouts",
        ),
        (
            {
                "diffusion_model.a.lora_A.weight": torch.zeros(2, 4),
                "diffusion_model.a.lora_B.weight": torch.zeros(4, 3),
            },
            "do not form a LoRA",
        ),
        ({"model.weight": torch.zeros(2)}, "no LoRA keys"),
    ],
)
def test_malformed_loras(tensors, message):
    with pytest.raises(LoraFileError, match=message):
        parse_lora(tensors)


def test_unsupported_keys_block_conversion():
    tensors = to_layout(make_parsed(), "comfy")
    tensors["diffusion_model.transformer_blocks.1.attn1.to_q.hada_w1_a"] = torch.zeros(2, 2)
    parsed = parse_lora(tensors)
    assert parsed.unsupported == ["diffusion_model.transformer_blocks.1.attn1.to_q.hada_w1_a"]
    with pytest.raises(LoraFileError, match="LoHa"):
        to_layout(parsed, "peft")


@pytest.mark.parametrize("to", LAYOUTS)
def test_convert_file_keeps_metadata_and_weights(tmp_path, to):
    parsed = make_parsed()
    meta = lora_metadata(rank=4, alpha=2.0, targets=["to_q"], step=7, trigger="ohwx")
    src = save_lora_file(tmp_path / "in.safetensors", to_layout(parsed, "kohya"), meta)
    dst, source = convert_file(src, tmp_path / "out" / f"{to}.safetensors", to, dtype="float16")
    assert source.layout == "kohya"
    tensors, meta2 = read_lora_file(dst)
    assert meta2 == {**meta, md.FORMAT: to, md.CONVERTED_FROM: conversion_record(src, to, fold_alpha=False,
                                                                            dtype="float16")}
    assert all(v.dtype == torch.float16 for k, v in tensors.items() if not k.endswith(".alpha"))
    assert_same_deltas(parsed, parse_lora(tensors), atol=2e-2)
    assert read_lora_file(src)[0].keys() == to_layout(parsed, "kohya").keys()  # source untouched


def test_a_converted_file_is_known_by_its_source_content_and_settings(tmp_path):
    """Only the file this very conversion writes counts as already written: other settings, another layout, a
    changed source, a file without the record or no safetensors file at all do not."""
    src = save_lora_file(tmp_path / "in.safetensors", to_layout(make_parsed(), "kohya"), {})
    dst, _ = convert_file(src, tmp_path / "out.safetensors", "comfy", dtype="bfloat16")
    assert holds_conversion(dst, src, "comfy", fold_alpha=False, dtype="bfloat16")
    assert not holds_conversion(dst, src, "comfy", fold_alpha=False, dtype="keep")
    assert not holds_conversion(dst, src, "comfy", fold_alpha=True, dtype="bfloat16")
    assert not holds_conversion(dst, src, "peft", fold_alpha=False, dtype="bfloat16")
    plain = save_lora_file(tmp_path / "plain.safetensors", to_layout(make_parsed(), "comfy"), {})
    assert not holds_conversion(plain, src, "comfy", fold_alpha=False, dtype="bfloat16")
    (tmp_path / "text.safetensors").write_text("not a LoRA")
    assert not holds_conversion(tmp_path / "text.safetensors", src, "comfy", fold_alpha=False, dtype="bfloat16")
    save_lora_file(src, to_layout(make_parsed(seed=1), "kohya"), {})  # the same name, other weights
    assert not holds_conversion(dst, src, "comfy", fold_alpha=False, dtype="bfloat16")


def test_convert_refuses_to_overwrite_source(tmp_path):
    src = save_lora_file(tmp_path / "in.safetensors", to_layout(make_parsed(), "comfy"), {})
    with pytest.raises(LoraFileError, match="Refusing to overwrite"):
        convert_file(src, src, "peft")
