"""``python -m trainer_core lora inspect|convert`` and structure-only family detection on synthetic LoRAs."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from trainer_core.cli import main
from trainer_core.lorafile import lora_metadata, read_lora_file, save_lora_file
from trainer_core.lorafile.family import family_from_structure, model_family
from trainer_core.lorafile.layouts import LoraModule, ParsedLora, conversion_record, parse_lora, to_layout


def lora(names_shapes: dict[str, tuple[int, int]], rank: int = 8, alpha: float | None = 8.0) -> ParsedLora:
    g = torch.Generator().manual_seed(0)
    mods = {
        n: LoraModule(torch.randn(rank, i, generator=g), torch.randn(o, rank, generator=g), alpha)
        for n, (o, i) in names_shapes.items()
    }
    return ParsedLora("comfy", mods, [])


def test_inspect_text_and_json(tmp_path, capsys):
    parsed = lora({"transformer_blocks.0.attn1.to_q": (64, 64), "transformer_blocks.0.audio_ff.net.2": (32, 128)})
    meta = lora_metadata(rank=8, alpha=8.0, targets=["to_q", "audio_ff.net.2"], step=250, trigger="ohwx")
    path = save_lora_file(tmp_path / "x.safetensors", to_layout(parsed, "comfy"), meta)
    assert main(["lora", "inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "LTX-2.3 (22B), from metadata" in text and "video attention 1, audio ffn 1" in text
    assert "ltxlora.trigger = ohwx" in text and "Rank: 8 (2 modules)" in text
    assert main(["lora", "inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"]["family"] == "ltx-2.3" and data["layout"] == "comfy"
    assert {m["name"]: m["rank"] for m in data["modules"]} == dict.fromkeys(parsed.modules, 8)


def test_inspect_against_a_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "model.safetensors"
    save_file(
        {
            "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight": torch.zeros(64, 64),
            "model.diffusion_model.patchify_proj.weight": torch.zeros(64, 128),
        },
        str(ckpt),
    )
    parsed = lora({"transformer_blocks.0.attn1.to_q": (64, 64), "transformer_blocks.0.attn1.to_k": (64, 64)})
    path = save_lora_file(tmp_path / "x.safetensors", to_layout(parsed, "kohya"), {})
    assert main(["lora", "inspect", str(path), "--model", str(ckpt)]) == 1
    out = capsys.readouterr().out
    assert "Matching layers: 1 of 2" in out and "transformer_blocks.0.attn1.to_k" in out


def test_convert_to_peft_and_back(tmp_path, capsys):
    parsed = lora({"transformer_blocks.3.video_to_audio_attn.to_out.0": (32, 32)}, alpha=4.0)
    src = save_lora_file(tmp_path / "in.safetensors", to_layout(parsed, "comfy"), {"note": "kept"})
    peft = tmp_path / "peft.safetensors"
    assert main(["lora", "convert", str(src), str(peft), "--to", "peft", "--dtype", "bfloat16"]) == 0
    assert "comfy -> peft" in capsys.readouterr().out
    tensors, meta = read_lora_file(peft)
    record = conversion_record(src, "peft", fold_alpha=False, dtype="bfloat16")  # the source's sha256, the settings
    assert meta == {"note": "kept", "ltxlora.format": "peft", "ltxlora.converted_from": record}
    assert set(tensors) == {
        "base_model.model.transformer_blocks.3.video_to_audio_attn.to_out.0.lora_A.weight",
        "base_model.model.transformer_blocks.3.video_to_audio_attn.to_out.0.lora_B.weight",
    }
    back = tmp_path / "back.safetensors"
    assert main(["lora", "convert", str(peft), str(back), "--to", "comfy"]) == 0
    name = "transformer_blocks.3.video_to_audio_attn.to_out.0"
    delta = parse_lora(read_lora_file(back)[0]).modules[name].delta()
    torch.testing.assert_close(delta, parsed.modules[name].delta(), rtol=2e-2, atol=2e-2)


def test_convert_without_out_writes_name_comfy_next_to_it(tmp_path, capsys):
    parsed = lora({"transformer_blocks.0.attn1.to_q": (32, 32)}, alpha=4.0)
    src = save_lora_file(tmp_path / "style.safetensors", to_layout(parsed, "peft"), {})
    assert main(["lora", "convert", str(src)]) == 0
    out = tmp_path / "style_comfy.safetensors"
    assert f"Wrote {out}" in capsys.readouterr().out
    assert parse_lora(read_lora_file(out)[0]).layout == "comfy"
    out.write_bytes(b"keep me")
    assert main(["lora", "convert", str(src)]) == 2  # an existing file is not replaced without --force
    assert "style_comfy.safetensors already exists; give another OUT or pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["lora", "convert", str(src), "--force"]) == 0
    assert parse_lora(read_lora_file(out)[0]).modules.keys() == parsed.modules.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["style.safetensors", "style_comfy.safetensors"]  # no temps


def test_cli_errors_are_clear(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    assert main(["lora", "inspect", str(bad)]) == 2
    assert "bad.safetensors is not a safetensors file" in capsys.readouterr().err
    ckpt = tmp_path / "ckpt.safetensors"
    save_file({"model.diffusion_model.proj_out.weight": torch.zeros(2, 2)}, str(ckpt))
    assert main(["lora", "convert", str(ckpt), str(tmp_path / "o.safetensors"), "--to", "comfy"]) == 2
    assert "holds no LoRA weights" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


def test_structure_only_families():
    flux = lora({"double_blocks.0.img_attn.qkv": (96, 32)})
    assert family_from_structure(flux).family == "not-ltx"
    ltxv_2b = lora({"transformer_blocks.27.attn1.to_q": (2048, 2048)})
    assert family_from_structure(ltxv_2b).family == "ltxv-0.9"
    video_4096 = lora({"transformer_blocks.0.attn1.to_q": (4096, 4096)}, rank=1)
    guess = family_from_structure(video_4096)
    assert guess.family is None and "ltxv-0.9" in guess.candidates and "ltx-2.3" in guess.candidates
    assert model_family(["transformer_blocks.0.attn1.to_q.weight", "patchify_proj.weight"]).family == "ltxv-0.9"
    assert model_family(["x.weight"]).family == "not-ltx"
