"""The training loop on the tiny ltx-core backbone: learning, exact gradients, resume, NaN stop and cancel."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.backbone import TextContext
from trainer_core.config import ConfigError
from trainer_core.engine.recipe import FlowMatchingRecipe
from trainer_core.engine.trainer import Callbacks, Trainer
from trainer_core.lora.adapter import LoraAdapters
from trainer_core.lora.targets import select_targets
from trainer_core.lorafile.read import read_lora_file


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "tiny_ltx23.safetensors"


def _eval_loss(backbone, adapters, data, recipe_settings, n_draws: int = 6) -> float:
    """Loss on fixed (sigma, noise) draws: comparable before and after training."""
    recipe = FlowMatchingRecipe(recipe_settings)
    total = 0.0
    with torch.no_grad(), adapters.attached():
        for i in range(len(data)):
            s = data[i]
            text = backbone.prepare_text(s.text)
            for k in range(n_draws):
                g = torch.Generator().manual_seed(1000 + k)
                inp, targets = recipe.prepare(s.video[None], s.audio[None], text, s.frame_rate, g)
                total += float(recipe.loss(*backbone.velocity(inp), targets)[0])
    return total / (len(data) * n_draws)


def test_loss_falls_and_outputs_are_complete(ckpt, tmp_path):
    backbone, data = tiny_backbone(ckpt), synthetic_data()
    cfg = config(tmp_path, optimization={"steps": 30, "learning_rate": 3e-2}, checkpoints={"every": 10})
    trainer = Trainer(backbone, data, cfg)
    before = _eval_loss(backbone, trainer.adapters, data, cfg.recipe)
    result = trainer.train()
    after = _eval_loss(backbone, trainer.adapters, data, cfg.recipe)
    assert result.status == "completed" and result.step == 30 and len(result.losses) == 30
    assert after < 0.9 * before, (before, after)
    # Checkpoints at 10, 20, 30 in ComfyUI layout with alpha tensors and our metadata.
    assert [p.name for p in result.checkpoints] == [f"t_step_{s:05d}.safetensors" for s in (10, 20, 30)]
    tensors, meta = read_lora_file(result.lora_path)
    names = trainer.adapters.names
    assert len(names) == 2 * 6 * 4  # 2 blocks x 6 attentions x q/k/v/out
    for n in names:
        a, b = tensors[f"diffusion_model.{n}.lora_A.weight"], tensors[f"diffusion_model.{n}.lora_B.weight"]
        assert a.shape[0] == 4 and b.shape[1] == 4
        assert float(tensors[f"diffusion_model.{n}.alpha"]) == 4.0
    assert meta["ltxlora.base_model"] == "ltx-2.3" and meta["ltxlora.step"] == "30"
    assert json.loads(meta["ltxlora.training_config"])["lora"]["rank"] == 4
    assert (tmp_path / "run" / "config.yaml").is_file()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_lora_gradients_equal_finite_differences(ckpt, checkpointing):
    backbone = tiny_backbone(ckpt, dtype=torch.float64)
    data = synthetic_data(n=1)
    g = torch.Generator().manual_seed(0)
    adapters = LoraAdapters(select_targets(backbone.lora_targets(), "all_attention"), 2, 2.0, generator=g).double()
    with torch.no_grad():
        for b in adapters.lora_B:
            b.normal_(0, 0.1, generator=g)  # B = 0 would make every A gradient zero
    s = data[0]
    recipe = FlowMatchingRecipe(config(ckpt.parent).recipe)
    text = backbone.prepare_text(s.text.double())
    text = TextContext(text.video.double(), text.audio.double())

    def loss() -> torch.Tensor:
        inp, targets = recipe.prepare(
            s.video[None].double(), s.audio[None].double(), text, s.frame_rate, torch.Generator().manual_seed(5)
        )
        return recipe.loss(*backbone.velocity(inp), targets)[0]

    backbone.set_gradient_checkpointing(checkpointing)
    with backbone.training_session(), adapters.attached():
        loss().backward()
        probes = [(adapters.lora_A, 0, (0, 0)), (adapters.lora_B, 5, (1, 1)), (adapters.lora_A, 40, (1, 3))]
        for params, index, element in probes:
            p = params[index]
            eps = 1e-6
            with torch.no_grad():
                orig = p[element].item()
                p[element] = orig + eps
                up = loss().item()
                p[element] = orig - eps
                down = loss().item()
                p[element] = orig
            fd = (up - down) / (2 * eps)
            assert p.grad[element].item() == pytest.approx(fd, rel=1e-5, abs=1e-10)


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(ckpt, tmp_path):
    data = synthetic_data()
    straight = Trainer(tiny_backbone(ckpt), data, config(tmp_path / "a")).train()
    interrupted = Trainer(tiny_backbone(ckpt), data, config(tmp_path / "b"))
    first = interrupted.train(Callbacks(should_stop=lambda: interrupted.run.step >= 3))
    assert first.status == "cancelled" and first.step == 3
    resumed_trainer = Trainer(tiny_backbone(ckpt), data, config(tmp_path / "b"))
    resumed_trainer.resume(first.lora_path)
    resumed = resumed_trainer.train()
    assert resumed.losses == straight.losses  # history carried over, then bit-identical continuation
    assert [p.name for p in resumed.checkpoints] == ["t_step_00006.safetensors"]  # numbering continues
    assert (tmp_path / "b" / "run" / "t_step_00003.safetensors").is_file()  # earlier checkpoint kept
    a, b = load_file(str(straight.lora_path)), load_file(str(resumed.lora_path))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(ckpt, tmp_path):
    data = synthetic_data(n=1)
    calls = {"n": 0}
    backbone = tiny_backbone(ckpt)
    velocity = backbone.velocity

    def poisoned(inp):
        calls["n"] += 1
        v, a = velocity(inp)
        return (v * float("nan"), a) if calls["n"] == 5 else (v, a)

    backbone.velocity = poisoned
    result = Trainer(backbone, data, config(tmp_path, checkpoints={"every": 2})).train()
    assert result.status == "diverged" and result.step == 4
    assert "step 5" in result.message and "t_step_00004.safetensors" in result.message
    assert "learning_rate" in result.message
    tensors, _ = read_lora_file(result.lora_path)
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_cancel_between_steps_saves_a_usable_checkpoint(ckpt, tmp_path):
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path, checkpoints={"every": 100}))
    result = trainer.train(Callbacks(should_stop=lambda: len(trainer.run.losses) >= 2))
    assert result.status == "cancelled" and result.step == 2
    assert result.lora_path.name == "t_step_00002.safetensors"
    resumed = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path))
    resumed.resume(result.lora_path)
    assert resumed.run.step == 2


def _interrupted_on_call(backbone, n: int):
    """``backbone`` whose ``n``-th forward raises KeyboardInterrupt (ComfyUI's interrupt lands inside the model)."""
    velocity, calls = backbone.velocity, {"n": 0}

    def interrupted(inp):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return velocity(inp)

    backbone.velocity = interrupted
    return backbone


def test_interrupt_inside_the_model_saves_then_propagates(ckpt, tmp_path):
    backbone = _interrupted_on_call(tiny_backbone(ckpt), 4)
    trainer = Trainer(backbone, synthetic_data(), config(tmp_path, checkpoints={"every": 2}))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    # Step 2 was a regular checkpoint; step 3 completed before the interrupt and is saved on the way out.
    assert (tmp_path / "run" / "t_step_00003.safetensors").is_file()
    assert (tmp_path / "run" / "t_step_00002.safetensors").is_file()
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "run").iterdir())


def test_interrupt_midway_through_a_step_resumes_exactly(ckpt, tmp_path):
    """The interrupted step already drew its caption dropout, sigmas and noise: the saved RNG must not include
    those draws, or the resumed run diverges from an uninterrupted one."""
    data = synthetic_data()
    cfg = {"checkpoints": {"every": 100}, "recipe": {"caption_dropout": 0.5}}
    straight = Trainer(tiny_backbone(ckpt), data, config(tmp_path / "a", **cfg)).train()
    backbone = _interrupted_on_call(tiny_backbone(ckpt), 4)
    with pytest.raises(KeyboardInterrupt):
        Trainer(backbone, data, config(tmp_path / "b", **cfg)).train()
    resumed = Trainer(tiny_backbone(ckpt), data, config(tmp_path / "b", **cfg))
    resumed.resume(tmp_path / "b" / "run" / "t_step_00003.safetensors")
    assert resumed.train().losses == straight.losses


def test_resume_of_a_finished_run_trains_nothing_and_past_it_says_to_raise_steps(ckpt, tmp_path):
    first = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path)).train()
    again = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path))
    again.resume(first.lora_path)
    done = again.train()  # a finished run resumed, e.g. after a kill while it wrote loss.png: nothing to redo
    assert (done.status, done.step, done.lora_path, done.losses) == ("completed", 6, first.lora_path, first.losses)
    fewer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path, optimization={"steps": 5}))
    with pytest.raises(ConfigError, match=r"at step 6, and optimization.steps is 5: raise optimization.steps"):
        fewer.resume(first.lora_path)
