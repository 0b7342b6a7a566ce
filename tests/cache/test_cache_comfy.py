"""The cache through ComfyUI v0.33's own classes: the tiny LTX-2.3 checkpoint's VAE as ComfyUI loads it, and
ComfyUI's real LTX-2.3 text encoder (``LTXAVTEModel`` with its ``DualLinearProjection`` and Gemma-3 code) built
with a tiny random Gemma config and the sentencepiece tokenizer shipped in the ComfyUI tree. Covers the nodes,
the LTX checks, identities, and ltx-trainer import agreement with ComfyUI's text encoder output."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import pytest
import torch

from tests.cache.test_cache_core import load, make_dataset
from tests.cache.test_cache_import import ltx_trainer_conditions
from trainer_core.cache import CachedData, CacheError
from trainer_core.cache.ltx_trainer_import import import_ltx_trainer

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny checkpoint")

from trainer_core.ltxcore.encoders import LtxCoreVae
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

V_DIM, A_DIM, HIDDEN, LAYERS = 64, 32, 32, 2  # the tiny checkpoint's cross-attention widths


def tiny_ltx_clip(comfy_root: Path, seed: int = 0):
    """ComfyUI's LTX-2.3 text encoder (real classes) around a tiny random Gemma; a ``comfy.sd.CLIP``."""
    import comfy.sd
    import comfy.sd1_clip as sd1_clip
    from comfy.text_encoders import llama, lt

    @dataclasses.dataclass
    class TinyGemmaConfig(llama.Gemma3_12B_Config):
        vocab_size: int = 32128
        hidden_size: int = HIDDEN
        intermediate_size: int = 64
        num_hidden_layers: int = LAYERS
        num_attention_heads: int = 2
        num_key_value_heads: int = 1
        head_dim = 16
        sliding_attention = [8, False]  # noqa: RUF012 - mirrors the upstream config's class attribute

    class TinyGemma(llama.Gemma3_12B):
        def __init__(self, config_dict, dtype, device, operations):
            torch.nn.Module.__init__(self)  # no vision tower
            config = TinyGemmaConfig(**config_dict)
            self.num_layers = config.num_hidden_layers
            self.model = llama.Llama2_(config, device=device, dtype=dtype, ops=operations)
            self.dtype = dtype

    class TinyGemmaModel(lt.Gemma3_12BModel):
        def __init__(self, device="cpu", layer="all", layer_idx=None, dtype=None, attention_mask=True,
                     model_options=None):
            self.dtypes = {dtype}
            sd1_clip.SDClipModel.__init__(
                self, device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config={}, dtype=dtype,
                special_tokens={"start": 2, "pad": 0}, layer_norm_hidden_state=False, model_class=TinyGemma,
                enable_attention_masks=attention_mask, return_attention_masks=attention_mask,
                model_options=model_options or {},
            )

    te = lt.ltxav_te(text_projection_type="dual_linear", text_encoder_model=TinyGemmaModel,
                     video_projection_dim=V_DIM, audio_projection_dim=A_DIM)
    spm = (comfy_root / "comfy/text_encoders/t5_pile_tokenizer/tokenizer.model").read_bytes()
    with torch.inference_mode():
        clip = comfy.sd.CLIP(target=types.SimpleNamespace(params={}, clip=te, tokenizer=lt.LTXAVGemmaTokenizer),
                             tokenizer_data={"spiece_model": spm})
        g = torch.Generator().manual_seed(seed)
        for p in clip.cond_stage_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.ndim > 1 else 0.1))
    return clip


@pytest.fixture(scope="module")
def setup(comfy, tmp_path_factory):
    from comfy import sd as comfy_sd  # not `import comfy.sd`: that would rebind the fixture argument

    from tests.comfy_boot import find_comfyui

    root = tmp_path_factory.mktemp("comfy_cache")
    ckpt = write_tiny_checkpoint(root / "tiny.safetensors", seed=0)
    with torch.inference_mode():
        _, _, vae = comfy_sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=False)[:3]
    return types.SimpleNamespace(pack=comfy, ckpt=ckpt, vae=vae, clip=tiny_ltx_clip(find_comfyui()), root=root)


def node(pack, node_id):
    return pack.NODE_CLASS_MAPPINGS[node_id]


def test_comfy_vae_matches_ltx_core_and_shares_identity(setup):
    from trainer_core.comfy.cache_encoders import ComfyVideoVae

    comfy_vae, core = ComfyVideoVae(setup.vae), LtxCoreVae(setup.ckpt)
    frames = torch.rand(9, 64, 96, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        latent = comfy_vae.encode(frames)
    assert latent.shape == (128, 2, 2, 3)
    torch.testing.assert_close(latent, core.encode(frames), rtol=1e-4, atol=1e-4)
    assert comfy_vae.identity() == core.identity()


def test_cache_node_encodes_with_comfy_models_and_preview_decodes(setup, tmp_path):
    from trainer_core.comfy.cache_encoders import ComfyLtxTextEncoder

    ds = load(make_dataset(tmp_path / "ds"))
    cache = node(setup.pack, "LtxLoraCacheLatents")
    folder = tmp_path / "cache"
    with torch.inference_mode():
        out = cache.execute(dataset=ds, vae=setup.vae, clip=setup.clip, folder=str(folder), tiled_vae=False)
    data = out.result[0]
    assert type(data).__name__ == "CachedData" and len(data) == len(ds.items) == 4  # the pack's own import
    assert data.model["text_family"] == "ltx-2.3-gemma" and data.text_width == V_DIM + A_DIM
    item = ds.items[0]
    with torch.inference_mode():
        tokens = setup.clip.tokenize(item.caption)
        expected = setup.clip.encode_from_tokens_scheduled(tokens)[0][0]
        empty = setup.clip.encode_from_tokens_scheduled(setup.clip.tokenize(""))[0][0]
        latent = setup.vae.encode(item.load_frames())[0]
    sample = data[data.index_of(item.id)]
    torch.testing.assert_close(sample.text, expected)
    torch.testing.assert_close(data.empty_text, empty)
    torch.testing.assert_close(sample.video, latent.float())
    assert ComfyLtxTextEncoder(setup.clip).identity() == data.model["text_encoder"]
    with torch.inference_mode():
        again = cache.execute(dataset=load(tmp_path / "ds"), vae=setup.vae, clip=setup.clip, folder=str(folder),
                              tiled_vae=False)
    assert "0 clips encoded, 0 captions encoded, 4 unchanged" in again.result[1]
    preview = node(setup.pack, "LtxLoraPreviewCachedLatents")
    with torch.inference_mode():
        shown = preview.execute(training_data=data, vae=setup.vae, items=item.id)
    b = item.bucket
    assert tuple(shown.result[0].shape) == (b.frames, b.height, b.width, 3)


def test_a_different_clip_reencodes_captions_only(setup, tmp_path):
    from tests.comfy_boot import find_comfyui
    from trainer_core.cache import build_cache
    from trainer_core.comfy.cache_encoders import ComfyLtxTextEncoder, ComfyVideoVae

    items = load(make_dataset(tmp_path / "ds")).items
    vae = ComfyVideoVae(setup.vae)
    with torch.inference_mode():
        build_cache(items, tmp_path / "c", vae, ComfyLtxTextEncoder(setup.clip))
        other = ComfyLtxTextEncoder(tiny_ltx_clip(find_comfyui(), seed=1))
        report = build_cache(items, tmp_path / "c", vae, other)
    assert report.encoded_latents == [] and len(report.encoded_texts) == 5  # 4 captions + the empty one


def test_wrong_models_are_refused(setup):
    from trainer_core.comfy.cache_encoders import ComfyLtxTextEncoder, ComfyVideoVae

    sd_like = types.SimpleNamespace(latent_channels=4, latent_dim=2, downscale_ratio=8, first_stage_model=None)
    with pytest.raises(CacheError, match=r"not an LTX-2\.x video VAE"):
        ComfyVideoVae(sd_like)
    t5_like = types.SimpleNamespace(cond_stage_model=torch.nn.Linear(2, 2))
    with pytest.raises(CacheError, match="not LTX's text encoder"):
        ComfyLtxTextEncoder(t5_like)


def test_ltx_trainer_import_agrees_with_comfy_text_encoder(setup, tmp_path):
    """ltx-core's feature extractor on the padded Gemma states (ltx-trainer's file) -> import == ComfyUI's CLIP."""
    fe = pytest.importorskip("ltx_core.text_encoders.gemma.feature_extractor")
    projection = setup.clip.cond_stage_model.text_embedding_projection
    extractor = fe.FeatureExtractorV2(
        video_aggregate_embed=torch.nn.Linear(HIDDEN * (LAYERS + 1), V_DIM),
        embedding_dim=HIDDEN,
        audio_aggregate_embed=torch.nn.Linear(HIDDEN * (LAYERS + 1), A_DIM),
    )
    extractor.load_state_dict({k: v.clone() for k, v in projection.state_dict().items()})
    caption = "a red fox runs through the snow"
    with torch.inference_mode():
        tokens = setup.clip.tokenize(caption)
        expected = setup.clip.encode_from_tokens_scheduled(tokens)[0][0]
        states, _, extra = setup.clip.cond_stage_model.gemma3_12b.encode_token_weights(tokens["gemma3_12b"])
    n = int(extra["attention_mask"].sum())
    hidden = states.movedim(1, -1)[:, -n:].clone()  # [1, T, D, layers]: the real tokens' Gemma states
    pre = tmp_path / "ds" / ".precomputed"
    (pre / "latents").mkdir(parents=True)
    (pre / "conditions").mkdir()
    torch.save({"latents": torch.zeros(128, 1, 2, 2), "fps": 25.0}, pre / "latents" / "fox.pt")
    torch.save(ltx_trainer_conditions(extractor, hidden, n), pre / "conditions" / "fox.pt")
    import_ltx_trainer(pre, tmp_path / "cache")
    imported = CachedData(tmp_path / "cache")[0].text
    assert imported.shape == expected.shape == (1, n, V_DIM + A_DIM)
    torch.testing.assert_close(imported, expected, rtol=1e-4, atol=1e-5)


def test_node_schemas(setup):
    for node_id in ("LtxLoraCacheLatents", "LtxLoraPreviewCachedLatents"):
        schema = node(setup.pack, node_id).define_schema()
        assert schema.category.endswith("/Cache") and schema.display_name
        assert all(getattr(i, "tooltip", None) for i in schema.inputs), node_id


def test_tiled_vae_options(setup):
    from trainer_core.comfy.cache_encoders import ComfyVideoVae

    frames = torch.rand(9, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = ComfyVideoVae(setup.vae).encode(frames)
        tiled = ComfyVideoVae(setup.vae, tiled=True).encode(frames)
        decoded = ComfyVideoVae(setup.vae, tiled=True).decode(tiled)
    assert tiled.shape == plain.shape == (128, 2, 2, 2)
    torch.testing.assert_close(tiled, plain, rtol=1e-4, atol=1e-4)  # one tile: same as untiled
    assert tuple(decoded.shape) == (9, 64, 64, 3)
    core = LtxCoreVae(setup.ckpt, tiled=True).encode(frames)
    torch.testing.assert_close(core, plain, rtol=1e-4, atol=1e-4)
