"""LtxCoreBackbone on tiny LTX-2.3 checkpoints: shapes, equivalence with ltx-trainer's call, connector parity
with ComfyUI, per-token timesteps, gradient checkpointing and the training session."""

from __future__ import annotations

import einops
import pytest
import torch
from torch import nn

from trainer_core.backbone import ModelInput, TextContext
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) is not installed")

from trainer_core.ltxcore.backbone import LtxCoreBackbone
from trainer_core.ltxcore.model import LtxCoreMissing, require_ltx_core

FPS = 24.0
VIDEO_SHAPE = (2, 128, 3, 2, 2)  # 12 tokens, 4 per latent frame
AUDIO_SHAPE = (2, 8, 10, 16)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ltxcore")


@pytest.fixture(scope="module")
def av_path(ckpt_dir):
    return write_tiny_checkpoint(ckpt_dir / "av.safetensors", seed=3)


@pytest.fixture(scope="module")
def av64(av_path):
    return LtxCoreBackbone.from_checkpoint(av_path, dtype=torch.float64)


def _inputs(backbone, *, audio=True, seed=0, video_sigma=0.7, audio_sigma=0.4) -> ModelInput:
    g = torch.Generator().manual_seed(seed)
    b, _, f, h, w = VIDEO_SHAPE
    text = backbone.prepare_text(torch.randn(1, 9, 96, generator=g, dtype=torch.float64))
    video = torch.randn(VIDEO_SHAPE, generator=g, dtype=torch.float64)
    video_t = torch.full((b, f * h * w), video_sigma, dtype=torch.float64)
    common = {
        "video": video,
        "video_timesteps": video_t,
        "video_sigma": torch.full((b,), video_sigma, dtype=torch.float64),
        "text": text,
        "frame_rate": FPS,
    }
    if not audio:
        return ModelInput(**common)
    t = AUDIO_SHAPE[2]
    return ModelInput(
        **common,
        audio=torch.randn(AUDIO_SHAPE, generator=g, dtype=torch.float64),
        audio_timesteps=torch.full((b, t), audio_sigma, dtype=torch.float64),
        audio_sigma=torch.full((b,), audio_sigma, dtype=torch.float64),
    )


def test_forward_shapes_av_and_video_only(av64, ckpt_dir):
    inp = _inputs(av64)
    assert av64.has_audio and av64.dtype == torch.float64 and av64.device.type == "cpu"
    assert inp.text.video.shape == (1, 1024, 64) and inp.text.audio.shape == (1, 1024, 32)
    v, a = av64.velocity(inp)
    assert v.shape == VIDEO_SHAPE and a.shape == AUDIO_SHAPE
    assert torch.isfinite(v).all() and torch.isfinite(a).all()
    v_only, a_none = av64.velocity(_inputs(av64, audio=False))
    assert v_only.shape == VIDEO_SHAPE and a_none is None
    assert not torch.allclose(v_only, v), "audio->video attention had no effect"

    vo_path = write_tiny_checkpoint(ckpt_dir / "video_only.safetensors", audio=False)
    vo = LtxCoreBackbone.from_checkpoint(vo_path, dtype=torch.float64)
    assert not vo.has_audio
    text = vo.prepare_text(torch.randn(1, 5, 96, dtype=torch.float64))
    assert text.audio is None and text.video.shape == (1, 1024, 64)
    inp_vo = _inputs(av64, audio=False)
    out, none = vo.velocity(ModelInput(**{**inp_vo.__dict__, "text": text}))
    assert out.shape == VIDEO_SHAPE and none is None
    with pytest.raises(ValueError, match="video-only"):
        vo.velocity(ModelInput(**{**inp.__dict__, "text": text}))


def test_velocity_equals_hand_built_ltx_trainer_call(av64):
    """The model called with Modality objects built the way ltx-trainer builds them gives the same velocity."""
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
    from ltx_core.model.transformer.modality import Modality
    from ltx_core.types import AudioLatentShape, SpatioTemporalScaleFactors, VideoLatentShape

    inp = _inputs(av64, seed=5)
    b, c, f, h, w = VIDEO_SHAPE
    coords = VideoLatentPatchifier(1).get_patch_grid_bounds(VideoLatentShape(b, c, f, h, w))
    v_pos = get_pixel_coords(coords, SpatioTemporalScaleFactors.default(), causal_fix=True).float()
    v_pos[:, 0, ...] = v_pos[:, 0, ...] / FPS
    a_pos = AudioPatchifier(1).get_patch_grid_bounds(AudioLatentShape(b, 8, AUDIO_SHAPE[2], 16))
    video = Modality(
        latent=einops.rearrange(inp.video, "b c f h w -> b (f h w) c"),
        sigma=inp.video_sigma,
        timesteps=inp.video_timesteps,
        positions=v_pos,
        context=inp.text.video.expand(b, -1, -1),
    )
    audio = Modality(
        latent=einops.rearrange(inp.audio, "b c t m -> b t (c m)"),
        sigma=inp.audio_sigma,
        timesteps=inp.audio_timesteps,
        positions=a_pos,
        context=inp.text.audio.expand(b, -1, -1),
    )
    with torch.no_grad():
        ref_v, ref_a = av64.transformer(video=video, audio=audio, perturbations=None)
        got_v, got_a = av64.velocity(inp)
    assert torch.equal(einops.rearrange(got_v, "b c f h w -> b (f h w) c"), ref_v)
    assert torch.equal(einops.rearrange(got_a, "b c t m -> b t (c m)"), ref_a)
    # positions really use the frame rate: another fps changes the output
    with torch.no_grad():
        other, _ = av64.velocity(ModelInput(**{**inp.__dict__, "frame_rate": 12.0}))
    assert not torch.allclose(other, got_v)


def test_per_token_timesteps_matter(av64):
    inp = _inputs(av64, seed=1)
    with torch.no_grad():
        base, _ = av64.velocity(inp)
        again, _ = av64.velocity(inp)
        t = inp.video_timesteps.clone()
        frame0 = VIDEO_SHAPE[3] * VIDEO_SHAPE[4]
        t[:, :frame0] = 0.0  # first latent frame is clean conditioning
        cond, _ = av64.velocity(ModelInput(**{**inp.__dict__, "video_timesteps": t}))
    assert torch.equal(base, again)
    assert (cond[:, :, 0] - base[:, :, 0]).abs().max() > 1e-3
    # frame 0's timestep also reaches the other frames through self-attention
    assert (cond[:, :, 1:] - base[:, :, 1:]).abs().max() > 1e-6


def weight_module(backbone):
    return backbone.transformer.transformer_blocks[0].attn1.to_q


def _loss_and_grads(backbone, inp, params):
    v, a = backbone.velocity(inp)
    loss = (v**2).mean() + (a**2).mean()
    return torch.autograd.grad(loss, params)


def test_gradient_checkpointing_gives_the_same_gradients(av64):
    inp = _inputs(av64, seed=2)
    weight = weight_module(av64).weight
    target = av64.lora_targets()["transformer_blocks.1.video_to_audio_attn.to_v"]
    g = torch.Generator().manual_seed(0)
    lora_a = nn.Parameter(torch.randn(4, target.in_features, generator=g, dtype=torch.float64) * 0.1)
    lora_b = nn.Parameter(torch.randn(target.out_features, 4, generator=g, dtype=torch.float64) * 0.1)
    hook = target.register_forward_hook(lambda _m, args, out: out + args[0] @ lora_a.T @ lora_b.T)
    calls = []
    # counted on a Linear inside block 0 (the checkpoint recomputes the block's forward, not its module hooks)
    count = weight_module(av64).register_forward_hook(lambda *_: calls.append(1))
    try:
        with av64.training_session():
            weight.requires_grad_(True)
            av64.set_gradient_checkpointing(False)
            plain = _loss_and_grads(av64, inp, [weight, lora_a, lora_b])
            plain_calls = len(calls)
            av64.set_gradient_checkpointing(True)
            ckpt = _loss_and_grads(av64, inp, [weight, lora_a, lora_b])
            ckpt_calls = len(calls) - plain_calls
    finally:
        hook.remove()
        count.remove()
        av64.set_gradient_checkpointing(False)
    assert (plain_calls, ckpt_calls) == (1, 2), "checkpointing did not recompute the block in backward"
    for p, c in zip(plain, ckpt, strict=True):
        assert p.abs().max() > 0
        torch.testing.assert_close(c, p, rtol=1e-10, atol=1e-14)
    assert not weight.requires_grad, "training_session did not restore requires_grad"


def test_training_session_freezes_and_restores(av64):
    inp = _inputs(av64, seed=4)
    with torch.no_grad():
        before, _ = av64.velocity(inp)
    probe = av64.transformer.proj_out.weight
    probe.requires_grad_(True)
    assert not av64.transformer.training
    try:
        with av64.training_session():
            assert av64.transformer.training
            assert not any(p.requires_grad for p in av64.transformer.parameters())
            assert not any(p.requires_grad for p in av64.model.video_connector.parameters())
            raise KeyboardInterrupt  # a cancel must restore too
    except KeyboardInterrupt:
        pass
    assert not av64.transformer.training and probe.requires_grad
    probe.requires_grad_(False)
    with torch.no_grad():
        after, _ = av64.velocity(inp)
    assert torch.equal(before, after)


def test_lora_targets(av64):
    targets = av64.lora_targets()
    assert all(isinstance(m, nn.Linear) for m in targets.values())
    for name in (
        "transformer_blocks.0.attn1.to_q",
        "transformer_blocks.0.attn2.to_out.0",
        "transformer_blocks.1.ff.net.0.proj",
        "transformer_blocks.1.ff.net.2",
        "transformer_blocks.1.audio_ff.net.2",
        "transformer_blocks.0.audio_to_video_attn.to_k",
        "transformer_blocks.0.video_to_audio_attn.to_gate_logits",
    ):
        assert name in targets, name
    # 6 attentions x 5 Linear (q, k, v, out, gate) + 2 feed-forwards x 2, per block
    assert len(targets) == 2 * (6 * 5 + 4)
    assert targets["transformer_blocks.0.attn1.to_q"] is av64.transformer.transformer_blocks[0].attn1.to_q


def test_text_width_and_batch_errors(av64):
    with pytest.raises(ValueError, match="96 wide"):
        av64.prepare_text(torch.randn(1, 5, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[1, T, D\]"):
        av64.prepare_text(torch.randn(2, 5, 96, dtype=torch.float64))
    inp = _inputs(av64)
    bad = ModelInput(**{**inp.__dict__, "video_timesteps": inp.video_timesteps[:, :5]})
    with pytest.raises(ValueError, match="video_timesteps"):
        av64.velocity(bad)


def test_prepare_text_runs_without_autograd(av64):
    embeds = torch.randn(1, 3, 96, dtype=torch.float64, requires_grad=True)
    text = av64.prepare_text(embeds)
    assert isinstance(text, TextContext) and not text.video.requires_grad and not text.audio.requires_grad


def test_missing_ltx_core_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ltx_core.model.transformer", None)
    with pytest.raises(LtxCoreMissing, match="pip install ltx-core"):
        require_ltx_core()


@pytest.mark.parametrize("tokens", [7, 1030])
def test_connectors_match_comfyui(comfy, av_path, tokens):
    """Our ltx-core connector call (left padding + mask) equals ComfyUI's (registers appended)."""
    import comfy.sd

    model, _, _, _ = comfy.sd.load_checkpoint_guess_config(str(av_path), output_vae=False, output_clip=False)
    dm = model.model.diffusion_model
    backbone = LtxCoreBackbone.from_checkpoint(av_path, dtype=torch.float32)
    raw = torch.randn(1, tokens, 96, generator=torch.Generator().manual_seed(tokens))
    with torch.no_grad():
        expected = dm.preprocess_text_embeds(raw.clone(), unprocessed=True)
    text = backbone.prepare_text(raw)
    length = 1024 if tokens <= 1024 else 1152
    assert text.video.shape == (1, length, 64) and text.audio.shape == (1, length, 32)
    torch.testing.assert_close(torch.cat([text.video, text.audio], dim=-1), expected.float(), rtol=0, atol=5e-5)
