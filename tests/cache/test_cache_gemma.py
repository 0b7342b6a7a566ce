"""The headless Gemma 3 text encoder (``trainer_core.ltxcore.gemma_text``) against ComfyUI's own LTX-2.3 text encoder.

The tiny random Gemma of ``tiny_ltx_clip`` (ComfyUI's real ``LTXAVTEModel`` and Gemma 3 classes) is written as a
single file in ComfyUI's layout (flat ``model.*`` keys, the SentencePiece model in ``spiece_model``) and as a Hugging
Face folder; its text projection goes into a copy of the tiny LTX-2.3 checkpoint, where a real file keeps it. The
headless encoder reads only those files and must give ComfyUI's features (1e-5), its cache ComfyUI's cache.
"""

from __future__ import annotations

import subprocess
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.cache.test_cache_core import BUCKETS, load, make_dataset
from trainer_core.cache import CachedData

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny checkpoint")
pytest.importorskip("transformers", reason="the headless text encoder runs transformers' Gemma 3")

from trainer_core.ltxcore.gemma_text import PROJECTION, SPIECE, load_gemma  # noqa: E402
from trainer_core.ltxcore.tiny import write_tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# tiny_ltx_clip's attention layout (sliding window 8, then a global layer); a single file carries no config.
TINY_LAYOUT = {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]}
CAPTIONS = ["a cat walks", "", "sks a grey clip number 2, with enough words to pass the eight-token sliding window"]


def write_checkpoint_with_projection(ckpt: Path, projection: dict[str, torch.Tensor], out: Path) -> Path:
    """The tiny checkpoint plus ``text_embedding_projection.*`` (where LTX-2.3's single file has it)."""
    with safe_open(str(ckpt), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(ckpt))
    tensors.update({PROJECTION + k: v.contiguous() for k, v in projection.items()})
    save_file(tensors, str(out), metadata=metadata)
    return out


@pytest.fixture(scope="module")
def tiny(comfy, tmp_path_factory):
    from tests.cache.test_cache_comfy import tiny_ltx_clip
    from tests.comfy_boot import find_comfyui

    root = tmp_path_factory.mktemp("gemma")
    clip = tiny_ltx_clip(find_comfyui())
    model = clip.cond_stage_model
    ckpt = write_tiny_checkpoint(root / "tiny.safetensors", seed=0)
    ckpt_proj = write_checkpoint_with_projection(ckpt, model.text_embedding_projection.state_dict(),
                                                 root / "tiny_with_projection.safetensors")
    prefix = "gemma3_12b.transformer."
    gemma = {k.removeprefix(prefix): v.contiguous() for k, v in model.state_dict().items() if k.startswith(prefix)}
    save_file({**gemma, SPIECE: clip.tokenizer.state_dict()[SPIECE]}, str(root / "gemma_tiny.safetensors"))
    return types.SimpleNamespace(pack=comfy, clip=clip, ckpt=ckpt, ckpt_proj=ckpt_proj, gemma=root / "gemma_tiny.safetensors",
                                 weights=gemma, root=root)


def test_headless_gemma_gives_comfyuis_text_conditions(tiny):
    from trainer_core.comfy.cache_encoders import ComfyLtxTextEncoder

    headless = load_gemma(tiny.gemma, tiny.ckpt_proj, dtype=torch.float32, text_config=TINY_LAYOUT)
    comfy = ComfyLtxTextEncoder(tiny.clip)
    assert (headless.family, headless.width) == (comfy.family, comfy.width) == ("ltx-2.3-gemma", 96)
    with torch.inference_mode():
        for caption in CAPTIONS:
            ours, theirs = headless.encode(caption), comfy.encode(caption)
            assert ours.shape == theirs.shape == (1, len(headless.tokens(caption)), 96)
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert headless.identity() == comfy.identity()  # a headless cache and a ComfyUI cache name one encoder


def test_hugging_face_folder_gives_the_same_features(tiny, tmp_path):
    from transformers import Gemma3Config

    single = load_gemma(tiny.gemma, tiny.ckpt_proj, dtype=torch.float32, text_config=TINY_LAYOUT)
    folder = tmp_path / "gemma-3-tiny-it"
    folder.mkdir()
    text = single.model.config.to_dict()
    Gemma3Config(text_config=text, vision_config={"hidden_size": 16, "intermediate_size": 32,
                                                  "num_hidden_layers": 1, "num_attention_heads": 2}
                 ).save_pretrained(folder)
    # transformers 4.5x's Gemma3ForConditionalGeneration names: language_model.model.*, plus a vision tower.
    save_file({**{"language_model." + k: v for k, v in tiny.weights.items()},
               "vision_tower.vision_model.post_layernorm.weight": torch.ones(16)},
              str(folder / "model-00001-of-00001.safetensors"))
    (folder / "tokenizer.model").write_bytes(tiny.clip.tokenizer.state_dict()[SPIECE].numpy().tobytes())
    from_folder = load_gemma(folder, tiny.ckpt_proj, dtype=torch.float32)
    for caption in CAPTIONS:
        torch.testing.assert_close(from_folder.encode(caption), single.encode(caption), rtol=1e-6, atol=1e-6)


def test_cli_cache_with_text_encoder_equals_the_cache_node(tiny, tmp_path, monkeypatch):
    from comfy import sd as comfy_sd  # not `import comfy.sd`: that would rebind the fixture's module

    import trainer_core.ltxcore.encoders as encoders
    import trainer_core.ltxcore.gemma_text as gemma_text
    from trainer_core.cli import main

    # The single file's config is Gemma 3 12B's layout; the tiny ComfyUI model has its own.
    real_load = gemma_text.load_gemma
    alive: list[weakref.ref] = []

    def load_tiny(*args, **kwargs):
        enc = real_load(*args, **{**kwargs, "text_config": TINY_LAYOUT})
        alive.append(weakref.ref(enc.model))
        return enc

    vae_init = encoders.LtxCoreVae.__init__
    freed_before_vae: list[bool] = []

    def vae_after_gemma(self, *args, **kwargs):
        freed_before_vae.append(bool(alive) and all(ref() is None for ref in alive))
        vae_init(self, *args, **kwargs)

    monkeypatch.setattr(gemma_text, "load_gemma", load_tiny)
    monkeypatch.setattr(encoders.LtxCoreVae, "__init__", vae_after_gemma)
    ds_root = make_dataset(tmp_path / "ds")
    headless = tmp_path / "headless"
    assert main(["cache", str(ds_root), "--checkpoint", str(tiny.ckpt_proj), "--text-encoder", str(tiny.gemma),
                 "--out", str(headless), "--buckets", BUCKETS, "--trigger", "sks", "--skip-audio"]) == 0
    assert freed_before_vae == [True]  # every caption was encoded and Gemma freed before the VAE loaded

    # The reference: the Cache node with ComfyUI's VAE and the tiny CLIP.
    with torch.inference_mode():
        vae = comfy_sd.load_checkpoint_guess_config(str(tiny.ckpt), output_vae=True, output_clip=False)[2]
        tiny.pack.NODE_CLASS_MAPPINGS["LtxLoraCacheLatents"].execute(
            dataset=load(ds_root), vae=vae, clip=tiny.clip, folder=str(tmp_path / "comfy"), tiled_vae=False)
    ours, theirs = CachedData(headless), CachedData(tmp_path / "comfy")
    assert ours.model["text_encoder"] == theirs.model["text_encoder"]
    assert ours.model["text_family"] == theirs.model["text_family"] == "ltx-2.3-gemma"
    torch.testing.assert_close(ours.empty_text, theirs.empty_text, rtol=1e-5, atol=1e-5)
    assert len(ours) == len(theirs) == 4
    for i in range(len(ours)):
        a = ours[i]
        b = theirs[theirs.index_of(a.key)]
        assert a.caption == b.caption and a.caption.startswith("sks")
        torch.testing.assert_close(a.text, b.text, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.video, b.video, rtol=1e-4, atol=1e-4)  # ComfyUI's VAE vs ltx-core's


def test_cli_cache_rerun_encodes_only_captions_it_lacks(tiny, tmp_path, monkeypatch, capsys):
    """A re-run with the same Gemma files loads nothing; a changed caption is the only one encoded; a moved file is
    loaded (its identity is unknown) but encodes nothing; other weights re-encode every caption."""
    import re

    import trainer_core.ltxcore.gemma_text as gemma_text
    from trainer_core.cli import main

    real_load, loads = gemma_text.load_gemma, []

    def load_tiny(*args, **kwargs):
        loads.append(args[0])
        return real_load(*args, **{**kwargs, "text_config": TINY_LAYOUT})

    monkeypatch.setattr(gemma_text, "load_gemma", load_tiny)
    ds_root, out = make_dataset(tmp_path / "ds"), tmp_path / "cache"

    def cache(gemma_file: Path) -> tuple[int, int, int]:
        """(Gemma loads, captions encoded, clips encoded) of one `cache` run."""
        loads.clear()
        capsys.readouterr()
        assert main(["cache", str(ds_root), "--checkpoint", str(tiny.ckpt_proj), "--text-encoder", str(gemma_file),
                     "--out", str(out), "--buckets", BUCKETS, "--trigger", "sks", "--skip-audio"]) == 0
        summary = capsys.readouterr().out
        found = re.search(r"(\d+) clips encoded, (\d+) captions encoded", summary)
        return len(loads), int(found[2]), int(found[1])

    assert cache(tiny.gemma) == (1, 5, 4)  # 4 captions and the empty one
    assert cache(tiny.gemma) == (0, 0, 0)  # Gemma not even loaded
    (ds_root / "clip1.txt").write_text("a different caption")
    assert cache(tiny.gemma) == (1, 1, 0)
    data = CachedData(out)
    headless = load_gemma(tiny.gemma, tiny.ckpt_proj, dtype=torch.float32, text_config=TINY_LAYOUT)
    torch.testing.assert_close(data[data.index_of("clip1.mp4")].text, headless.encode("sks a different caption"))
    assert cache(tiny.gemma) == (0, 0, 0)

    moved = tmp_path / "elsewhere" / "gemma_tiny.safetensors"
    moved.parent.mkdir()
    moved.write_bytes(tiny.gemma.read_bytes())
    assert cache(moved) == (1, 0, 0)  # same weights: loaded once to learn their identity, nothing re-encoded
    assert cache(moved) == (0, 0, 0)

    other = tmp_path / "gemma_other.safetensors"  # the same file with other final-norm weights
    weights = {**tiny.weights, "model.norm.weight": tiny.weights["model.norm.weight"] + 0.5}
    save_file({**weights, SPIECE: tiny.clip.tokenizer.state_dict()[SPIECE]}, str(other))
    identity = CachedData(out).model["text_encoder"]
    assert cache(other) == (1, 5, 0)
    assert CachedData(out).model["text_encoder"] != identity
    assert len(list((out / "text").glob("*.safetensors"))) == 5  # the first encoder's files collected


FP8_MAX = 448.0  # largest float8_e4m3fn value
FP4_MAX = 6.0  # largest float4_e2m1 value


def quantize_fp8(w: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Scaled fp8: float8_e4m3fn values and a per-tensor scale (amax / 448). Returns (the file's tensors by key
    suffix, the weight they decode to)."""
    scale = (w.abs().amax() / FP8_MAX).float()
    w8 = (w / scale).to(torch.float8_e4m3fn)
    return {"weight": w8, "weight_scale": scale.reshape(())}, w8.float() * scale


def quantize_nvfp4(w: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """NVFP4 with comfy_kitchen's own kernels, as ComfyUI quantizes: two e2m1 values a byte, one e4m3 scale per 16
    weights (``weight_scale``, in the swizzled tile layout the kernels use) and a per-tensor fp32 scale
    (``weight_scale_2``, amax / (448 * 6)). Returns (the file's tensors by key suffix, the weight they decode to)."""
    import comfy_kitchen as ck

    scale = (w.abs().amax() / (FP8_MAX * FP4_MAX)).float()
    packed, blocks = ck.quantize_nvfp4(w.float(), scale)
    decoded = ck.dequantize_nvfp4(packed, scale, blocks, torch.float32)
    return {"weight": packed, "weight_scale": blocks, "weight_scale_2": scale.reshape(())}, decoded


def write_quantized_gemma(weights: dict[str, torch.Tensor], spm: torch.Tensor, out: Path, layout: str) -> dict:
    """``weights`` as a quantized ComfyUI Gemma file: each Linear weight of the layers quantized, the rest as given.

    ``layout`` "comfy_quant": scaled fp8, ``weight_scale`` and the ``_quantization_metadata`` header; "scaled_fp8":
    the older ``scale_weight`` and ``scaled_fp8`` marker (both are what ComfyUI's ``convert_old_quants`` reads);
    "nvfp4": packed uint8 weights, ``weight_scale`` / ``weight_scale_2`` and the header with format ``nvfp4`` (what
    ComfyUI's ``_load_quantized_module`` reads). Returns the weights the file decodes to."""
    import json

    quantize, fmt = (quantize_nvfp4, "nvfp4") if layout == "nvfp4" else (quantize_fp8, "float8_e4m3fn")
    out_state, decoded, layers = {}, {}, {}
    for key, w in weights.items():
        if key.startswith("model.layers.") and key.endswith(".weight") and w.ndim == 2:
            layer = key.removesuffix(".weight")
            tensors, decoded[key] = quantize(w)
            if layout == "scaled_fp8":
                tensors["scale_weight"] = tensors.pop("weight_scale")
            out_state.update({f"{layer}.{name}": t for name, t in tensors.items()})
            layers[layer] = {"format": fmt}
        else:
            out_state[key] = decoded[key] = w
    metadata = None
    if layout == "scaled_fp8":
        out_state["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    else:
        metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    save_file({**out_state, SPIECE: spm}, str(out), metadata=metadata)
    return decoded


# The bound on the quantized file's features against the full-precision file's (relative L2 of each caption's
# features). e4m3 keeps 3 mantissa bits: rounding moves these weights by 2.7% RMS. NVFP4's e2m1 keeps 1 mantissa bit
# on a grid of 0, 0.5, 1, 1.5, 2, 3, 4, 6 times an e4m3 scale per 16 weights: 9.7% RMS, 3.6 times as much. The
# features pass 7 quantized matmuls per layer in 2 layers and move 2-3 times the weights (measured: fp8 6-8%,
# NVFP4 18-24%); each bound leaves a quarter or more above that. A scale applied twice is off by over 100%; a
# missing per-tensor scale only by 28-42% (the RMS norms absorb most of it), so the 1e-5 match with the dequantized
# file, not this bound, is what pins how ComfyUI decodes the scales.
MAX_ERROR = {"comfy_quant": 0.15, "scaled_fp8": 0.15, "nvfp4": 0.30}


@pytest.mark.parametrize("layout", ["comfy_quant", "scaled_fp8", "nvfp4"])
def test_quantized_gemma_through_comfyuis_loader(tiny, tmp_path, monkeypatch, layout):
    """`cache --text-encoder` with a scaled-fp8 or NVFP4 Gemma file: ComfyUI's loader reads it (the path taken for
    quantized files), gives exactly the features of the weights the file decodes to (on the CPU ComfyUI computes
    with the dequantized weights: full-precision matmul for text encoders, and no fp4 compute), and features close
    to the full-precision file's, as far as the format's rounding allows. ComfyUI frees it before the VAE loads."""
    from comfy import sd as comfy_sd
    from comfy.text_encoders import llama

    import trainer_core.ltxcore.encoders as encoders
    import trainer_core.ltxcore.gemma_text as gemma_text
    from trainer_core.cli import main

    spm = tiny.clip.tokenizer.state_dict()[SPIECE]
    quantized = tmp_path / f"gemma_tiny_{layout}.safetensors"
    decoded = write_quantized_gemma(tiny.weights, spm, quantized, layout)
    dequantized = tmp_path / "gemma_tiny_dequantized.safetensors"
    save_file({**decoded, SPIECE: spm}, str(dequantized))
    # ComfyUI builds Gemma 3 12B's fixed config for any Gemma 3 file; the tiny file needs the tiny class.
    monkeypatch.setattr(llama, "Gemma3_12B", type(tiny.clip.cond_stage_model.gemma3_12b.transformer))
    real_headless, real_comfy = gemma_text.load_gemma, comfy_sd.load_clip
    loaded: list[str] = []
    alive: list[weakref.ref] = []
    formats: set[str] = set()

    def headless(*args, **kwargs):
        loaded.append("headless")
        return real_headless(*args, **{**kwargs, "text_config": TINY_LAYOUT})

    def comfy_loader(*args, **kwargs):
        loaded.append("comfy")
        clip = real_comfy(*args, **kwargs)
        alive.append(weakref.ref(clip.cond_stage_model))
        formats.update(getattr(m, "quant_format", None) for m in clip.cond_stage_model.modules())
        return clip

    vae_init = encoders.LtxCoreVae.__init__
    freed_before_vae: list[bool] = []

    def vae_after_text(self, *args, **kwargs):
        freed_before_vae.append(all(ref() is None for ref in alive))
        vae_init(self, *args, **kwargs)

    monkeypatch.setattr(gemma_text, "load_gemma", headless)
    monkeypatch.setattr(comfy_sd, "load_clip", comfy_loader)
    monkeypatch.setattr(encoders.LtxCoreVae, "__init__", vae_after_text)
    ds_root = make_dataset(tmp_path / "ds")
    caches = {}
    for name, gemma_file in [("quantized", quantized), ("dequantized", dequantized), ("full", tiny.gemma)]:
        caches[name] = tmp_path / name
        assert main(["cache", str(ds_root), "--checkpoint", str(tiny.ckpt_proj), "--text-encoder", str(gemma_file),
                     "--out", str(caches[name]), "--buckets", BUCKETS, "--trigger", "sks", "--skip-audio"]) == 0
    assert loaded == ["comfy", "headless", "headless"]
    assert freed_before_vae[0] and len(alive) == 1
    assert formats - {None} == {"nvfp4" if layout == "nvfp4" else "float8_e4m3fn"}  # ComfyUI read them quantized

    q_data, deq_data, full_data = (CachedData(caches[n]) for n in ("quantized", "dequantized", "full"))
    assert q_data.model["text_family"] == full_data.model["text_family"] == "ltx-2.3-gemma"
    triples = [(q_data.empty_text, deq_data.empty_text, full_data.empty_text)]
    for i in range(len(q_data)):
        key = q_data[i].key
        triples.append((q_data[i].text, deq_data[deq_data.index_of(key)].text, full_data[full_data.index_of(key)].text))
    for ours, decoded_ref, full_ref in triples:
        torch.testing.assert_close(ours, decoded_ref, rtol=1e-5, atol=1e-5)
        error = ((ours - full_ref).norm() / full_ref.norm()).item()
        assert 0.0 < error < MAX_ERROR[layout], error


def test_quantized_gemma_without_comfyui_names_the_bf16_file(tmp_path):
    """An fp8 ComfyUI Gemma file where ComfyUI cannot be imported: one error line naming the bf16 file."""
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.safetensors", seed=0)
    fp8 = tmp_path / "gemma_3_12B_it_fp8_scaled.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(8, 4),
               "model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4).to(torch.float8_e4m3fn),
               "model.layers.0.self_attn.q_proj.weight_scale": torch.ones(()),
               SPIECE: torch.zeros(4, dtype=torch.uint8)}, str(fp8))
    ds_root = make_dataset(tmp_path / "ds")
    # A fresh interpreter from the repo root: ComfyUI is not on its path (the comfy fixture added it to this one).
    proc = subprocess.run(
        [sys.executable, "-m", "trainer_core", "cache", str(ds_root), "--checkpoint", str(ckpt), "--text-encoder",
         str(fp8), "--out", str(tmp_path / "out"), "--buckets", BUCKETS],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "quantized (fp8 / NVFP4)" in errors[0] and "gemma_3_12B_it.safetensors" in errors[0]
    assert not (tmp_path / "out").exists()  # refused before any VAE or cache work


def test_transformers_4_is_refused_with_the_upgrade(tmp_path, monkeypatch):
    import transformers

    from trainer_core.cache import CacheError
    from trainer_core.ltxcore.gemma_text import load_text_encoder

    plain = tmp_path / "gemma.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(8, 4), SPIECE: torch.zeros(4, dtype=torch.uint8)}, str(plain))
    monkeypatch.setattr(transformers, "__version__", "4.57.1")
    with pytest.raises(CacheError, match=r"needs transformers 5 or newer; this environment has 4\.57\.1: pip install"):
        load_text_encoder(plain, tmp_path / "unused.safetensors")
