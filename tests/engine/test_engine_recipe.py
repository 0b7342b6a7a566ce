"""The training recipe against hand computations and the analytic sigma distribution (no model needed)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer_core.backbone import TextContext
from trainer_core.config import ConfigError, dump_yaml, load_yaml, parse_section
from trainer_core.config.training import OptimizationSettings, RecipeSettings, TrainConfig
from trainer_core.engine.optim import lr_factor
from trainer_core.engine.recipe import FlowMatchingRecipe
from trainer_core.engine.sigma import Z_005, Z_999, sample_sigmas, shift_for_tokens


def _analytic_moments(tokens: int, eps: float = 1e-3) -> tuple[float, float]:
    """Mean and variance of the stretched, reflected logit-normal by quadrature over the normal."""
    mu = shift_for_tokens(tokens)
    z = torch.linspace(mu - 9, mu + 9, 400_001, dtype=torch.float64)
    pdf = torch.exp(-0.5 * (z - mu) ** 2) / math.sqrt(2 * math.pi)
    lo, hi = torch.sigmoid(torch.tensor(mu + Z_005, dtype=torch.float64)), torch.sigmoid(
        torch.tensor(mu + Z_999, dtype=torch.float64)
    )
    s = (torch.sigmoid(z) - lo) / (hi - lo)
    s = torch.where(s >= eps, s, 2 * eps - s).clamp(0, 1)
    dz = z[1] - z[0]
    mean = float((s * pdf).sum() * dz)
    var = float(((s - mean) ** 2 * pdf).sum() * dz)
    return mean, var


def test_shift_is_linear_in_tokens_and_not_clamped():
    assert shift_for_tokens(1024) == pytest.approx(0.95)
    assert shift_for_tokens(4096) == pytest.approx(2.05)
    assert shift_for_tokens(3570) == pytest.approx(0.95 + 1.1 * (3570 - 1024) / 3072)
    assert shift_for_tokens(8192) > 2.05  # the reference does not clamp


@pytest.mark.parametrize("tokens", [256, 1024, 3570])
def test_sigma_moments_match_the_analytic_distribution(tokens):
    g = torch.Generator().manual_seed(0)
    draws = sample_sigmas(200_000, tokens, g, uniform_prob=0.0).double()
    mean, var = _analytic_moments(tokens)
    assert draws.min() >= 0 and draws.max() <= 1
    assert float(draws.mean()) == pytest.approx(mean, abs=3e-3)
    assert float(draws.var()) == pytest.approx(var, rel=2e-2)


def test_ten_percent_of_sigmas_are_uniform():
    g = torch.Generator().manual_seed(1)
    mixed = sample_sigmas(200_000, 4096, g).double()
    mean, _ = _analytic_moments(4096)
    # A 90/10 mixture of the logit-normal and U(eps, 1) has this mean.
    assert float(mixed.mean()) == pytest.approx(0.9 * mean + 0.1 * 0.5, abs=3e-3)
    uniform = sample_sigmas(100_000, 4096, g, mode="uniform")
    assert float(uniform.mean()) == pytest.approx(0.5, abs=5e-3)


def _batch(b=2, f=3, h=2, w=2, audio_steps=5):
    g = torch.Generator().manual_seed(7)
    video = torch.randn(b, 128, f, h, w, generator=g)
    audio = torch.randn(b, 8, audio_steps, 16, generator=g)
    text = TextContext(torch.randn(b, 4, 8, generator=g), torch.randn(b, 4, 4, generator=g))
    return video, audio, text


def test_noised_input_target_and_loss_match_a_hand_computation():
    video, audio, text = _batch()
    recipe = FlowMatchingRecipe(RecipeSettings())
    inp, targets = recipe.prepare(video, audio, text, 24.0, torch.Generator().manual_seed(3))
    # Replay the generator in the documented draw order: video sigma, video noise, first-frame, audio sigma, noise.
    g = torch.Generator().manual_seed(3)
    sigma = sample_sigmas(2, 12, g)
    noise = torch.randn(video.shape, generator=g)
    s = sigma.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(inp.video, (1 - s) * video + s * noise)
    torch.testing.assert_close(targets.video, noise - video)
    torch.testing.assert_close(inp.video_sigma, sigma)
    assert torch.equal(inp.video_timesteps, sigma.view(2, 1).expand(2, 12))
    torch.rand(2, generator=g)
    sigma_a = sample_sigmas(2, 5, g)
    noise_a = torch.randn(audio.shape, generator=g)
    torch.testing.assert_close(targets.audio, noise_a - audio)
    torch.testing.assert_close(inp.audio_sigma, sigma_a)
    assert inp.frame_rate == 24.0
    # Zero prediction: loss = mean over samples of mean((eps - x0)^2), video plus audio.
    loss, parts = recipe.loss(torch.zeros_like(video), torch.zeros_like(audio), targets)
    expected_v = ((noise - video) ** 2).mean()
    expected_a = ((noise_a - audio) ** 2).mean()
    assert float(parts["video"]) == pytest.approx(float(expected_v), rel=1e-6)
    assert float(loss) == pytest.approx(float(expected_v + expected_a), rel=1e-6)


def test_first_frame_tokens_are_clean_at_timestep_zero_and_out_of_the_loss():
    video, _, text = _batch()
    recipe = FlowMatchingRecipe(RecipeSettings(first_frame_p=1.0))
    inp, targets = recipe.prepare(video, None, text, 25.0, torch.Generator().manual_seed(0))
    per_frame = 2 * 2
    assert torch.equal(inp.video[:, :, 0], video[:, :, 0])
    assert not torch.equal(inp.video[:, :, 1], video[:, :, 1])
    assert torch.all(inp.video_timesteps[:, :per_frame] == 0)
    assert torch.all(inp.video_timesteps[:, per_frame:] > 0)
    assert torch.all(targets.video_mask[:, :per_frame] == 0) and torch.all(targets.video_mask[:, per_frame:] == 1)
    pred = torch.zeros_like(video)
    base, _ = recipe.loss(pred, None, targets)
    pred[:, :, 0] = 1e3  # an arbitrary error on frame 0 must not change the loss
    changed, _ = recipe.loss(pred, None, targets)
    assert float(changed) == float(base)
    pred[:, :, 1] = 1e3
    assert float(recipe.loss(pred, None, targets)[0]) > float(base)


def test_untrained_audio_is_clean_and_has_no_loss():
    video, audio, text = _batch()
    inp, targets = FlowMatchingRecipe(RecipeSettings(audio="condition")).prepare(
        video, audio, text, 25.0, torch.Generator().manual_seed(0)
    )
    assert torch.equal(inp.audio, audio) and torch.all(inp.audio_timesteps == 0)
    assert targets.audio is None


def test_learning_rate_schedules():
    lin = OptimizationSettings(steps=100, warmup_steps=10, scheduler="linear")
    assert lr_factor(0, lin) == pytest.approx(1 / 11)
    assert lr_factor(10, lin) == pytest.approx(1.0)
    assert lr_factor(100, lin) == pytest.approx(0.1)
    cos = OptimizationSettings(steps=100, scheduler="cosine")
    assert lr_factor(50, cos) == pytest.approx(0.5)
    assert lr_factor(100, cos) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(77, OptimizationSettings(scheduler="constant")) == 1.0


def test_defaults_follow_the_reference_templates():
    cfg = TrainConfig()
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.optimization.learning_rate) == (32, 32.0, 1e-4)
    assert (cfg.optimization.steps, cfg.optimization.batch_size, cfg.checkpoints.every) == (1500, 1, 250)
    assert cfg.lora.targets == "all_attention"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"lora": {"rank": 0}}, "lora.rank"),
        ({"optimization": {"learning_rate": -1}}, "optimization.learning_rate"),
        ({"optimization": {"scheduler": "exponential"}}, "optimization.scheduler"),
        ({"lora": {"rnak": 8}}, "lora.rnak"),
        ({"recipe": {"first_frame_p": 1.5}}, "recipe.first_frame_p"),
    ],
)
def test_bad_config_values_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_section(TrainConfig, data)


def test_yaml_written_by_a_run_reproduces_it(tmp_path):
    cfg = parse_section(TrainConfig, {"seed": 3, "lora": {"rank": 8, "targets": "video_attention"}})
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(cfg), encoding="utf-8")
    assert load_yaml(TrainConfig, path) == cfg
    path.write_text("lora:\n  rank: many\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.yaml: lora\.rank"):
        load_yaml(TrainConfig, path)
