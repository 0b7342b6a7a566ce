"""LoRAs fabricated for tiny LTX-2.3 / LTX-2 models: conversions keep the patched outputs (ltx-core) and the
patched weights (ComfyUI's stock LoraLoaderModelOnly, zero skipped keys); the wrong family is refused."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from trainer_core.lorafile import lora_metadata, read_lora_file, save_lora_file
from trainer_core.lorafile.family import FAMILY_NAMES, detect_family
from trainer_core.lorafile.inspect import inspect_file
from trainer_core.lorafile.match import checkpoint_weight_shapes, match_model
from trainer_core.lorafile.modules import is_audio_stream
from trainer_core.lorafile.layouts import LAYOUTS, LoraModule, ParsedLora, convert_file, parse_lora, to_layout
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) is not installed")

SKIPPED = re.compile(r"lora key not loaded|NOT LOADED|ERROR .*shape", re.IGNORECASE)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("lorafile_models")
    return {
        "ltx-2.3": write_tiny_checkpoint(d / "ltx23.safetensors", seed=1),
        "ltx-2": write_tiny_checkpoint(d / "ltx2.safetensors", seed=2, family="ltx-2"),
    }


def fabricate(ckpt, pattern: str, *, rank: int = 4, alpha: float | None = 2.0, seed: int = 0) -> ParsedLora:
    """A random LoRA on every 2-D weight of ``ckpt`` whose module name matches ``pattern``."""
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for key, shape in sorted(checkpoint_weight_shapes(ckpt).items()):
        name = key.removesuffix(".weight")
        if key.endswith(".weight") and len(shape) == 2 and re.search(pattern, name) and "connector" not in name:
            down = torch.randn(rank, shape[1], generator=g) * 0.1
            up = torch.randn(shape[0], rank, generator=g) * 0.1
            modules[name] = LoraModule(down, up, alpha)
    return ParsedLora("comfy", modules, [])


ALL_BLOCK_LINEARS = r"^transformer_blocks\."


# ---------------------------------------------------------------- ltx-core: patched outputs


@pytest.fixture(scope="module")
def core(ckpts):
    from trainer_core.backbone import ModelInput
    from trainer_core.ltxcore.backbone import LtxCoreBackbone

    backbone = LtxCoreBackbone.from_checkpoint(ckpts["ltx-2.3"], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    inp = ModelInput(
        video=torch.randn(1, 128, 2, 2, 2, generator=g, dtype=torch.float64),
        video_timesteps=torch.full((1, 8), 0.6, dtype=torch.float64),
        video_sigma=torch.full((1,), 0.6, dtype=torch.float64),
        text=backbone.prepare_text(torch.randn(1, 7, 96, generator=g, dtype=torch.float64)),
        frame_rate=24.0,
        audio=torch.randn(1, 8, 5, 16, generator=g, dtype=torch.float64),
        audio_timesteps=torch.full((1, 5), 0.3, dtype=torch.float64),
        audio_sigma=torch.full((1,), 0.3, dtype=torch.float64),
    )
    return backbone, inp


def patched_output(core, parsed: ParsedLora | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity with ``W += scale * B @ A`` merged into every adapted layer (weights restored afterwards)."""
    backbone, inp = core
    targets = backbone.lora_targets()
    saved = {n: targets[n].weight.detach().clone() for n in (parsed.modules if parsed else {})}
    try:
        with torch.no_grad():
            for name, m in (parsed.modules if parsed else {}).items():
                targets[name].weight += m.delta().to(torch.float64)
            return backbone.velocity(inp)
    finally:
        with torch.no_grad():
            for name, w in saved.items():
                targets[name].weight.copy_(w)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_converted_lora_gives_same_ltx_core_output(core, ckpts, tmp_path, layout):
    original = fabricate(ckpts["ltx-2.3"], ALL_BLOCK_LINEARS, alpha=2.0)
    v_ref, a_ref = patched_output(core, original)
    v_base, a_base = patched_output(core, None)
    assert (v_ref - v_base).abs().max() > 1e-3 and (a_ref - a_base).abs().max() > 1e-3  # the LoRA matters

    src = save_lora_file(tmp_path / f"{layout}.safetensors", to_layout(original, layout), {})
    for fold in (False, True):
        out, source = convert_file(src, tmp_path / f"comfy_{fold}.safetensors", "comfy", fold_alpha=fold)
        assert source.layout == layout
        converted = parse_lora(read_lora_file(out)[0])
        v, a = patched_output(core, converted)
        torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, a_ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- family detection and the guard


def test_ltx2_lora_is_detected_and_refused_on_ltx23(ckpts, tmp_path):
    shapes23 = checkpoint_weight_shapes(ckpts["ltx-2.3"])
    # Structure alone: an LTX-2 LoRA that also adapts the in-transformer caption projection.
    ltx2 = fabricate(ckpts["ltx-2"], r"attn1\.to_q|caption_projection")
    family = detect_family(ltx2, {})
    assert family.family == "ltx-2" and family.source == "structure"
    match = match_model(ltx2, family, shapes23)
    assert not match.ok and "LTX-2 (19B)" in match.family_conflict and FAMILY_NAMES["ltx-2.3"] in match.family_conflict
    assert sorted(match.missing) == sorted(n for n in ltx2.modules if "caption_projection" in n)
    # The file inspection (CLI, Inspect LoRA node) matches a file against a model the same way
    path = save_lora_file(tmp_path / "ltx2.safetensors", to_layout(ltx2, "kohya"), {})
    report, from_file = inspect_file(path, shapes23)
    assert report.family == family and report.layout == "kohya"
    assert (sorted(from_file.matched), sorted(from_file.missing)) == (sorted(match.matched), sorted(match.missing))
    assert from_file.family_conflict == match.family_conflict
    # Same layer names and shapes as 2.3: only our metadata tells them apart, and then it is refused too.
    attn_only = fabricate(ckpts["ltx-2"], r"attn1\.to_[qkv]$")
    unverified = match_model(attn_only, detect_family(attn_only, {}), shapes23)
    assert not (unverified.missing or unverified.shape_mismatch or unverified.family_conflict)
    assert [p.split(":")[0] for p in unverified.problems()] == ["unknown family"]  # the checked loader asks for force
    meta = lora_metadata(rank=4, alpha=2.0, targets=["to_q"], step=1, base_model="ltx-2")
    declared = detect_family(attn_only, meta)
    assert declared.family == "ltx-2" and declared.source == "metadata"
    assert match_model(attn_only, declared, shapes23).family_conflict
    # The same LoRA on its own model fits.
    assert match_model(ltx2, family, checkpoint_weight_shapes(ckpts["ltx-2"])).ok


def test_structure_honesty_and_gated_detection(ckpts, tmp_path):
    attn = fabricate(ckpts["ltx-2.3"], r"attn\d?\.to_(q|k|v|out\.0)$")
    guess = detect_family(attn, {})
    assert guess.family is None and set(guess.candidates) == {"ltx-2", "ltx-2.3", "ltx-2.5"}
    assert "cannot be told apart" in guess.describe()
    gated = fabricate(ckpts["ltx-2.3"], ALL_BLOCK_LINEARS)
    assert set(detect_family(gated, {}).candidates) == {"ltx-2.3", "ltx-2.5"}
    path = save_lora_file(tmp_path / "g.safetensors", to_layout(gated, "kohya"), {})
    report, _ = inspect_file(path)
    assert report.layout == "kohya" and report.blocks == [0, 1]
    assert report.ranks == {4: 68} and report.alphas == {"2": 68}
    # 2 blocks x (2 attentions x 5 projections incl. the gate) per group, 2 layers per FFN
    assert report.groups == {
        "video_attention": 20,
        "audio_attention": 20,
        "cross_modal_attention": 20,
        "video_ffn": 4,
        "audio_ffn": 4,
    }


# ---------------------------------------------------------------- ComfyUI


@pytest.fixture
def loras_dir(comfy, tmp_path, monkeypatch):
    import folder_paths

    exts = folder_paths.folder_names_and_paths["loras"][1]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], exts))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return tmp_path


@pytest.fixture(scope="module")
def comfy_model(comfy, ckpts):
    from comfy.sd import load_checkpoint_guess_config

    return load_checkpoint_guess_config(str(ckpts["ltx-2.3"]), output_vae=False, output_clip=False)[0]


@pytest.fixture
def lora_nodes(comfy):
    """The pack's LoRA node classes by name, as ComfyUI loaded them."""
    return {cls.__name__: cls for cls in comfy.nodes.lora.NODES}


def comfy_patched_weights(patcher) -> dict[str, torch.Tensor]:
    """ComfyUI's own merged weights for every patched key (``comfy.lora.calculate_weight``)."""
    import comfy.lora

    sd = patcher.model.state_dict()
    return {k: comfy.lora.calculate_weight(p, sd[k].float().clone(), k) for k, p in patcher.patches.items()}


def expected_weights(patcher, parsed: ParsedLora, strength=lambda name: 1.0) -> dict[str, torch.Tensor]:
    sd = patcher.model.state_dict()
    out = {}
    for name, m in parsed.modules.items():
        if strength(name):
            key = f"diffusion_model.{name}.weight"
            out[key] = sd[key].float() + strength(name) * m.delta()
    return out


def stock_load(model, name: str, caplog) -> tuple[object, list[str]]:
    import nodes

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        (patched,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)
    return patched, [r.getMessage() for r in caplog.records if SKIPPED.search(r.getMessage())]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_converted_lora_loads_in_stock_comfyui_without_skips(comfy_model, ckpts, loras_dir, lora_nodes, caplog, layout):
    original = fabricate(ckpts["ltx-2.3"], ALL_BLOCK_LINEARS, alpha=2.0)
    src = save_lora_file(loras_dir / "src" / f"{layout}.safetensors", to_layout(original, layout), {})
    name = lora_nodes["ConvertLora"].execute(str(src), f"{layout}_comfy", False, "keep", False).result[0]
    assert name == f"{layout}_comfy.safetensors" and (loras_dir / name).is_file()
    patched, skipped = stock_load(comfy_model, name, caplog)
    assert skipped == []
    got = comfy_patched_weights(patched)
    want = expected_weights(patched, original)
    assert got.keys() == want.keys() and len(got) == len(original.modules)
    for key, w in want.items():
        torch.testing.assert_close(got[key], w, rtol=1e-5, atol=1e-6, msg=key)


def test_unconverted_transformer_prefix_is_skipped_by_stock_comfyui(comfy_model, ckpts, loras_dir, caplog):
    """Why the converter exists: ComfyUI drops diffusers/LTX-Video-Trainer keys with only a log line."""
    original = fabricate(ckpts["ltx-2.3"], r"attn1\.to_q$")
    save_lora_file(loras_dir / "diffusers.safetensors", to_layout(original, "diffusers"), {})
    patched, skipped = stock_load(comfy_model, "diffusers.safetensors", caplog)
    assert len(skipped) == 2 * len(original.modules) and not patched.patches


def test_checked_loader_separate_strengths(comfy_model, ckpts, loras_dir, lora_nodes):
    lora = fabricate(ckpts["ltx-2.3"], ALL_BLOCK_LINEARS)
    meta = lora_metadata(rank=4, alpha=2.0, targets=["all"], step=10)
    save_lora_file(loras_dir / "ours.safetensors", to_layout(lora, "comfy"), meta)
    out = lora_nodes["LoadLoraChecked"].execute(comfy_model, "ours.safetensors", 0.5, 0.0, False)
    patched, report = out.result
    assert not comfy_model.patches, "the input MODEL must stay unpatched"
    video = [n for n in lora.modules if not is_audio_stream(n)]
    assert f"Applied {len(video)} video-stream layers at strength 0.5 and 0 audio-stream layers" in report
    assert "LTX-2.3 (22B), from metadata" in report
    want = expected_weights(patched, lora, lambda n: 0.0 if is_audio_stream(n) else 0.5)
    got = comfy_patched_weights(patched)
    assert got.keys() == want.keys()
    assert "diffusion_model.transformer_blocks.0.video_to_audio_attn.to_q.weight" not in got
    assert "diffusion_model.transformer_blocks.0.audio_to_video_attn.to_q.weight" in got
    for key, w in want.items():
        torch.testing.assert_close(got[key], w, rtol=1e-5, atol=1e-6, msg=key)
    both, _ = lora_nodes["LoadLoraChecked"].execute(comfy_model, "ours.safetensors", 1.0, 2.0, False).result
    strengths = {k: p[0][0] for k, p in both.patches.items()}
    assert strengths["diffusion_model.transformer_blocks.1.audio_ff.net.2.weight"] == 2.0
    assert strengths["diffusion_model.transformer_blocks.1.ff.net.2.weight"] == 1.0


def test_checked_loader_refuses_other_family_unless_forced(comfy, comfy_model, ckpts, loras_dir, lora_nodes):
    mismatch = comfy.trainer_core.lorafile.fit.LoraMismatchError  # the pack's copy, as ComfyUI imported it
    ltx2 = fabricate(ckpts["ltx-2"], r"attn1\.to_q|caption_projection")
    save_lora_file(loras_dir / "ltx2.safetensors", to_layout(ltx2, "kohya"), {})
    load = lora_nodes["LoadLoraChecked"]
    with pytest.raises(mismatch, match=r"Refusing to apply ltx2\.safetensors: this LoRA is for LTX-2 \(19B\)"):
        load.execute(comfy_model, "ltx2.safetensors", 1.0, 1.0, False)
    patched, report = load.execute(comfy_model, "ltx2.safetensors", 1.0, 1.0, True).result
    attn = [n for n in ltx2.modules if "attn1" in n]
    assert "FORCED despite" in report and "caption_projection" in report
    assert set(patched.patches) == {f"diffusion_model.{n}.weight" for n in attn}
    text = lora_nodes["InspectLora"].execute("ltx2.safetensors", comfy_model).result[0]
    assert "LTX-2 (19B), from structure" in text and "PROBLEM" in text
    assert f"Matching layers: {len(attn)} of {len(ltx2.modules)}" in text


def test_sweep_cell_models_equal_the_checked_loader(comfy, comfy_model, ckpts, loras_dir, lora_nodes):
    """The sweep patches through the same loader: each cell's MODEL is what the checked loader gives for that file
    with both strengths at the cell's strength; strength 0 is the input MODEL itself."""
    lora = fabricate(ckpts["ltx-2.3"], ALL_BLOCK_LINEARS, seed=3)
    meta = lora_metadata(rank=4, alpha=2.0, targets=["all"], step=10)
    save_lora_file(loras_dir / "swept.safetensors", to_layout(lora, "kohya"), meta)
    sweep = comfy.NODE_CLASS_MAPPINGS["LtxLoraSweep"]
    cond = [[torch.zeros(1, 2, 96), {}]]
    out = sweep.execute(comfy_model, "swept.safetensors", "0, 0.5, -1.5", "7", 48, with_trigger=cond)
    models, plan = out.result[0], out.result[4]
    checked = {}
    for cell, model in zip(plan.cells, models, strict=True):
        variant = plan.variants[cell.row]
        if variant.lora is None:
            assert model is comfy_model
            continue
        s = variant.strength
        if s not in checked:
            checked[s] = lora_nodes["LoadLoraChecked"].execute(comfy_model, "swept.safetensors", s, s, False).result[0]
        want = checked[s]
        assert model.get_attachment("lora_metadata") == want.get_attachment("lora_metadata") == meta
        got_w, want_w = comfy_patched_weights(model), comfy_patched_weights(want)
        assert got_w.keys() == want_w.keys() and len(got_w) == len(lora.modules)
        for key, w in want_w.items():
            assert torch.equal(got_w[key], w), key
    assert sorted(checked) == [-1.5, 0.5]
    assert not comfy_model.patches
