"""Family signatures on tiny tensors in the real key layout: gate logits, prompt AdaLN, AdaLN width (9 in LTX-2.3,
6 in LTX-2) and the in-transformer caption projection, for LoRAs and checkpoints; LTX-2.5 from its own signatures
(no FFN biases, keyframe embedding, Gemma 4 pack) refused; an unknown-family LoRA needs the checked loader's force."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer_core.cli import main
from trainer_core.lorafile.family import UnsupportedModelError, family_from_structure, model_family
from trainer_core.lorafile.fit import LoraMismatchError, fit_lora
from trainer_core.lorafile.layouts import LoraModule, ParsedLora, to_layout
from trainer_core.lorafile.match import checkpoint_weight_shapes
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

V, A = 64, 32  # the tiny model's video and audio widths
AUDIO_ATTN = {"transformer_blocks.0.audio_attn1.to_q": (A, A)}
VIDEO_ATTN = {"transformer_blocks.0.attn1.to_q": (V, V), "transformer_blocks.0.attn1.to_k": (V, V)}


def lora(shapes: dict[str, tuple[int, int]]) -> ParsedLora:
    g = torch.Generator().manual_seed(0)
    return ParsedLora("comfy", {n: LoraModule(torch.randn(2, i, generator=g), torch.randn(o, 2, generator=g), 2.0)
                                for n, (o, i) in shapes.items()}, [])


@pytest.mark.parametrize(("shapes", "expected", "why"), [
    ({**VIDEO_ATTN, "transformer_blocks.0.attn1.to_gate_logits": (2, V)}, {"ltx-2.3", "ltx-2.5"}, "to_gate_logits"),
    ({**VIDEO_ATTN, "prompt_adaln_single.linear": (2 * V, V)}, {"ltx-2.3", "ltx-2.5"}, "prompt_adaln_single"),
    ({**VIDEO_ATTN, "adaln_single.linear": (9 * V, V)}, {"ltx-2.3", "ltx-2.5"}, "9-wide AdaLN"),
    ({**VIDEO_ATTN, "adaln_single.linear": (6 * V, V)}, {"ltx-2", "ltxv-0.9"}, "6-wide AdaLN"),
    ({**VIDEO_ATTN, **AUDIO_ATTN, "audio_adaln_single.linear": (6 * A, A)}, {"ltx-2"}, "6-wide AdaLN"),
    ({**VIDEO_ATTN, "caption_projection.linear_1": (V, V)}, {"ltx-2", "ltxv-0.9"}, "caption projection"),
    ({**AUDIO_ATTN, "caption_projection.linear_1": (V, V)}, {"ltx-2"}, "caption projection"),
])
def test_lora_signatures(shapes, expected, why):
    guess = family_from_structure(lora(shapes))
    assert set(guess.candidates) == expected and why in guess.reason


def test_a_lora_that_cannot_be_told_apart_is_an_unknown_family():
    guess = family_from_structure(lora({**VIDEO_ATTN, **AUDIO_ATTN}))
    assert guess.family is None and set(guess.candidates) == {"ltx-2", "ltx-2.3", "ltx-2.5"}
    assert guess.describe().startswith("unknown family: LTX-2 (19B) or LTX-2.3 (22B) or LTX-2.5")
    contradictory = family_from_structure(lora({**AUDIO_ATTN, "transformer_blocks.0.attn1.to_gate_logits": (2, V),
                                                "caption_projection.linear_1": (V, V)}))
    assert contradictory.candidates == () and "contradictory signatures" in contradictory.reason


def _model(**extra: tuple[int, ...]) -> dict[str, torch.Size]:
    base = {"patchify_proj.weight": (V, 128), "transformer_blocks.0.attn1.to_q.weight": (V, V),
            "audio_adaln_single.linear.weight": (9 * A, A), "transformer_blocks.0.ff.net.0.proj.weight": (4 * V, V),
            "transformer_blocks.0.ff.net.0.proj.bias": (4 * V,)}
    return {k: torch.Size(v) for k, v in {**base, **extra}.items() if v}


@pytest.mark.parametrize(("extra", "family", "why"), [
    ({"transformer_blocks.0.attn1.to_gate_logits.weight": (2, V)}, "ltx-2.3", "gated attention"),
    ({"prompt_adaln_single.linear.weight": (2 * V, V)}, "ltx-2.3", "prompt AdaLN"),
    ({"adaln_single.linear.weight": (9 * V, V)}, "ltx-2.3", "9-wide AdaLN"),
    ({"adaln_single.linear.weight": (6 * V, V)}, "ltx-2", "6-wide AdaLN"),
    ({"caption_projection.linear_1.weight": (V, V)}, "ltx-2", "caption projection"),
    ({"transformer_blocks.0.ff.net.0.proj.bias": ()}, "ltx-2.5", "no FFN biases"),
    ({"keyframes_abs_pos_embedding": (4, V)}, "ltx-2.5", "keyframe position embedding"),
])
def test_checkpoint_signatures(extra, family, why):
    guess = model_family(_model(**extra))
    assert guess.family == family and why in guess.reason


def test_the_tiny_checkpoints_show_every_signature_of_their_family(tmp_path):
    ltx23 = model_family(checkpoint_weight_shapes(write_tiny_checkpoint(tmp_path / "a.safetensors")))
    assert ltx23.family == "ltx-2.3" and ltx23.reason == "gated attention, prompt AdaLN, 9-wide AdaLN (LTX-2.3)"
    ltx2 = model_family(checkpoint_weight_shapes(write_tiny_checkpoint(tmp_path / "b.safetensors", family="ltx-2")))
    assert ltx2.family == "ltx-2" and ltx2.reason == "6-wide AdaLN, caption projection in the transformer (LTX-2)"


@pytest.fixture
def ltx25_checkpoint(tmp_path):
    """The tiny LTX-2.3 checkpoint without FFN biases (LTX-2.5's ff_bias=false), same header."""
    from safetensors import safe_open

    src = write_tiny_checkpoint(tmp_path / "ltx23.safetensors", audio=True)
    with safe_open(str(src), "pt") as fh:
        header = fh.metadata()
    tensors = {k: v for k, v in load_file(str(src)).items() if not (".ff.net." in k and k.endswith(".bias"))}
    save_file(tensors, str(tmp_path / "ltx25.safetensors"), metadata=header)
    return tmp_path / "ltx25.safetensors"


def test_ltx25_is_refused_by_train_the_checked_loader_and_inspect(ltx25_checkpoint, tmp_path, capsys):
    shapes = checkpoint_weight_shapes(ltx25_checkpoint)
    assert model_family(shapes).family == "ltx-2.5"
    layers = lora({"transformer_blocks.0.attn1.to_q": (V, V)})
    with pytest.raises(LoraMismatchError,
                       match=r"the model is LTX-2\.5 \(no FFN biases \(LTX-2\.5\)\): LTX-2\.5 is not supported yet"):
        fit_lora(to_layout(layers, "comfy"), {"ltxlora.base_model": "ltx-2.3"}, shapes)
    lora_file = tmp_path / "l.safetensors"
    save_file(to_layout(layers, "comfy"), str(lora_file))
    assert main(["lora", "inspect", str(lora_file), "--model", str(ltx25_checkpoint)]) == 1
    assert "PROBLEM: the model is LTX-2.5" in capsys.readouterr().out
    (tmp_path / "cfg.yaml").write_text(f"model: {{checkpoint: {ltx25_checkpoint}, device: cpu}}\ndata: {tmp_path}\n")
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 2
    assert "is LTX-2.5 (no FFN biases (LTX-2.5)): LTX-2.5 is not supported yet" in capsys.readouterr().err


def test_ltx25_gemma4_pack_is_named(tmp_path):
    path = tmp_path / "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors"
    save_file({"tokenizer_json": torch.zeros(4, dtype=torch.uint8),
               "text_embedding_projection.video_aggregate_embed.weight": torch.zeros(4, 4)}, str(path),
              metadata={"gemma_config": "{}"})
    with pytest.raises(UnsupportedModelError, match="LTX-2.5's packed Gemma 4 text encoder"):
        checkpoint_weight_shapes(path)


def test_an_unknown_family_lora_needs_force_in_the_checked_loader(tmp_path):
    shapes = checkpoint_weight_shapes(write_tiny_checkpoint(tmp_path / "a.safetensors"))
    attention_only = to_layout(lora({**VIDEO_ATTN, **AUDIO_ATTN}), "comfy")  # as ltx-trainer writes: no metadata
    with pytest.raises(LoraMismatchError, match="unknown family: this LoRA fits LTX-2 .* set 'force'"):
        fit_lora(attention_only, {}, shapes)
    report, parts = fit_lora(attention_only, {}, shapes, force=True)
    assert report.forced and sum(len(p.lora.modules) for p in parts) == 3
    assert "unknown family" in report.text()
    # The same layers with our metadata are verified and applied without force.
    report, _ = fit_lora(attention_only, {"ltxlora.base_model": "ltx-2.3"}, shapes)
    assert not report.forced and report.match.ok
