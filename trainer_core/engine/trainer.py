"""The training loop: setup, train, save, cleanup, on any ``Backbone``.

Progress, cancel and checkpoint notifications reach the caller through ``Callbacks``, so the same loop serves the
CLI (progress bar, Ctrl-C) and the ComfyUI node (ProgressBar, interrupt button, live chart).
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import torch

from .. import __version__
from ..atomic import DiskWriteError, sweep_stale_temps, write_atomic
from ..backbone import Backbone, ModelInput, TextContext
from ..cache.manifest import check_cache_for_model
from ..config import ConfigError
from ..config.training import TrainConfig, train_config_yaml
from ..errors import UserError
from ..lora.adapter import LoraAdapters
from ..lora.targets import select_targets
from ..lorafile import metadata as lora_meta
from .checkpoints import CheckpointWriter
from .compiling import compile_wanted
from .data import Sample, TrainingData, collate, epoch_batches
from .distributed import SingleProcess
from .memory import (
    TrainingOutOfMemory,
    block_shape_of,
    free_device_memory,
    largest_fitting,
    out_of_memory_message,
)
from .modes import resolve_modes, stream_targets
from .optim import build_optimizer, build_scheduler
from .recipe import FlowMatchingRecipe, Targets
from .run_lock import RunLock
from .state import CheckpointDamaged, RunState, checkpoint_problem, load_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepInfo:
    step: int
    total: int
    loss: float
    parts: dict[str, float]
    lr: float
    seconds: float


@dataclass
class Callbacks:
    on_step: Callable[[StepInfo], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_checkpoint: Callable[[Path, int], None] | None = None

    def add_on_step(self, fn: Callable[[StepInfo], None]) -> None:
        """Call ``fn`` at every step too, after the ``on_step`` already set (progress first, then previews)."""
        first = self.on_step

        def both(info: StepInfo) -> None:
            if first is not None:
                first(info)
            fn(info)

        self.on_step = both


@dataclass
class TrainResult:
    status: Literal["completed", "cancelled", "diverged"]
    step: int
    lora_path: Path | None
    losses: list[float]
    adapters: LoraAdapters
    message: str = ""
    checkpoints: list[Path] = field(default_factory=list)


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite."""


class Trainer:
    """One LoRA training run of ``cfg`` on ``backbone`` over ``data``.

    ``parallel``: this process's part in a multi-process run (``engine.distributed``); one process by default.
    """

    def __init__(
        self,
        backbone: Backbone,
        data: TrainingData,
        cfg: TrainConfig,
        base_model: str = "ltx-2.3",
        parallel: SingleProcess | None = None,
    ) -> None:
        if cfg.recipe.caption_dropout > 0 and not data.has_empty_text:
            raise ConfigError(
                f"recipe.caption_dropout is {cfg.recipe.caption_dropout}, but the training data has no empty caption "
                "to drop to (latents wired straight into the Train node, or a cache imported without a text "
                "encoder): set recipe.caption_dropout to 0, or train from a latent cache made by Cache LTX Training "
                "Latents (it encodes the empty caption)"
            )
        model = getattr(data, "model", None)  # the manifest's record of a cache (None: latents wired in)
        if model:
            check_cache_for_model(model, data.folder, base_model, None, f"the model being trained ({base_model})")
        self.backbone, self.data, self.cfg = backbone, data, cfg
        self.parallel = parallel or SingleProcess()
        self.out = Path(cfg.output_dir)
        self.modes = resolve_modes(cfg.recipe, data, backbone.has_audio)
        targets = stream_targets(
            select_targets(backbone.lora_targets(), cfg.lora.targets, cfg.lora.custom_list()), self.modes
        )
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.adapters = LoraAdapters(targets, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, self.generator)
        self.adapters.to(backbone.device)
        if cfg.memory.mixed_precision == "bf16":
            self.adapters.use_compute_dtype(torch.bfloat16)
        self.optimizer = build_optimizer(self.adapters.masters(), cfg.optimization)
        self.scheduler = build_scheduler(self.optimizer, cfg.optimization)
        self.recipe = FlowMatchingRecipe(cfg.recipe, self.modes)
        self.run = RunState()
        self.resumed_from: Path | None = None
        self.writer = CheckpointWriter(
            self.out,
            cfg.name,
            cfg.checkpoints.keep_last,
            {
                "rank": cfg.lora.rank,
                "alpha": cfg.lora.alpha,
                "targets": self.adapters.names,
                "base_model": base_model,
                "trigger": data.trigger,
                "dataset_fingerprint": data.fingerprint,
                "audio": self.modes.audio,
                "video": self.modes.video,
                "reference_downscale_factor": self.modes.reference_factor or None,
                "reference_temporal_scale_factor": self.modes.reference_temporal_factor,
                "training_config": cfg.model_dump(mode="json"),
            },
        )
        self._texts: dict[str, TextContext] = {}  # connector output per caption, in host memory
        self.compiled_blocks = False  # set by train(): whether the backbone runs its blocks through torch.compile

    def resume(self, lora_path: Path) -> None:
        """Continue from a checkpoint of this pack: LoRA weights, optimizer moments, schedule position, RNGs, data
        position and loss history.

        Where the current config differs from the checkpoint's, the current config wins, from the next step on:

        - ``optimization.learning_rate``, ``weight_decay``, ``steps``, ``warmup_steps``, ``scheduler``: the schedule
          continues at the checkpoint's step with the current settings (a new peak rate applies at once, times the
          schedule's factor at that step); the optimizer moments are kept.
        - ``optimization.batch_size``, ``seed``: the interrupted epoch continues with the clips not yet trained on
          in it, so every clip is still seen once per epoch, but the batches (and with a new seed the noise, sigma
          and caption-dropout draws) follow the current settings, so the run no longer equals an uninterrupted one;
          a warning says so. The learning rate is not rescaled for a new batch size.
        - other training data (another fingerprint): the record of the interrupted epoch's clips refers to the old
          data, so a new epoch begins, with the same warning.
        - the number of processes (``torchrun``): the batches follow the global batch, processes x
          ``optimization.batch_size``; where that product is the checkpoint's (2 x 1 after 1 x 2), the run continues
          as an uninterrupted one would, else as for another batch size.

        ``lora.rank``, ``lora.alpha``, ``lora.targets``, ``lora.custom_targets`` and ``optimization.optimizer``
        define what the checkpoint holds: a change raises ``ConfigError`` (set them back, or start a new run).
        """
        from ..lorafile.read import read_lora_file

        problem = checkpoint_problem(lora_path)
        if problem is not None:
            raise CheckpointDamaged(
                f"cannot resume from {lora_path}: {problem}. Resume from 'latest' (the newest intact checkpoint of "
                "this run) or name an earlier checkpoint"
            )
        tensors, meta = read_lora_file(lora_path)
        before = json.loads(meta.get(lora_meta.TRAINING_CONFIG, "{}"))
        now = self.cfg.model_dump(mode="json")
        for name in _FIXED_ON_RESUME:
            if _setting(before, name) not in (None, _setting(now, name)):
                raise ConfigError(
                    f"{name} is {_setting(now, name)!r}, but {lora_path.name} was trained with "
                    f"{_setting(before, name)!r}: set it back to resume, or start a new run without resuming"
                )
        self.adapters.load_comfy_state_dict(tensors)
        self.run = load_state(lora_path, self.optimizer, self.scheduler, self.generator)
        self.resumed_from = lora_path
        if self.run.step == self.cfg.optimization.steps:
            log.info("%s is the run's last step (%d): nothing left to train", lora_path.name, self.run.step)
        if self.run.step > self.cfg.optimization.steps:
            raise ConfigError(
                f"{lora_path} is at step {self.run.step}, and optimization.steps is {self.cfg.optimization.steps}: "
                "raise optimization.steps above it to train further"
            )
        log.info("resuming from step %d (%s)", self.run.step, lora_path)
        changed = {n: (_setting(before, n), _setting(now, n)) for n in _CHANGEABLE_ON_RESUME}
        changed = {n: (old, new) for n, (old, new) in changed.items() if old not in (None, new)}
        for name, (old, new) in changed.items():
            log.info("%s is %s (the checkpoint's was %s) from step %d on", name, new, old, self.run.step + 1)
        if "seed" in changed:
            # Re-roll what the checkpoint's RNGs would have drawn next (noise, sigmas, caption dropout).
            torch.manual_seed(self.cfg.seed)
            self.generator.manual_seed(self.cfg.seed)
        # What decides the batches is the global batch: processes x optimization.batch_size.
        world, batch_before = self.parallel.world_size, _setting(before, "optimization.batch_size")
        if self.run.processes != world:
            log.info("%s was trained by %d processes, this run has %d", lora_path.name, self.run.processes, world)
        reordered = []
        if batch_before is not None and batch_before * self.run.processes != self.cfg.optimization.batch_size * world:
            same_world = self.run.processes == world
            reordered.append("optimization.batch_size" if same_world else "global batch (processes x batch_size)")
        if "seed" in changed:
            reordered.append("seed")
        if meta.get(lora_meta.DATASET_FINGERPRINT, "") not in ("", self.data.fingerprint):
            reordered.append("training data")
            if self.run.seen:  # indices into the old data: start the next epoch instead
                self.run.epoch, self.run.seen = self.run.epoch + 1, []
        if reordered:
            log.warning(
                "resumed with another %s than %s: training goes on with the clips the current epoch has not trained "
                "on yet, but the data order differs from an uninterrupted run",
                " and ".join(reordered),
                lora_path.name,
            )

    def _text(self, key: str, embeds: torch.Tensor) -> TextContext:
        """``key``'s caption after the frozen connectors, on the device; they run once per caption, not every step.

        The results wait in host memory (pinned for fast copies on CUDA): at full size each is ~12.6 MB, gigabytes
        for a large dataset, which would crowd the device (and the memory estimate leaves them out).
        """
        device = self.backbone.device
        host = self._texts.get(key)
        if host is None:
            ctx = self.backbone.prepare_text(embeds.to(device))
            pin = device.type == "cuda"
            host = self._texts[key] = TextContext(
                *(None if t is None else _host_copy(t, pin) for t in (ctx.video, ctx.audio))
            )
        # Asynchronous from pinned memory: the host copy stays alive and unchanged in the cache.
        return TextContext(*(None if t is None else t.to(device, non_blocking=True) for t in (host.video, host.audio)))

    def _batch_loss(self, indices: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of this process's rows of the global batch ``indices``, weighted by their share of it (all of
        it in one process); every process draws the random numbers of the whole batch, as one process would."""
        samples = [self.data[i] for i in indices]
        for s in samples:
            self._check_finite(s)
        dropped = [torch.rand(1, generator=self.generator).item() < self.cfg.recipe.caption_dropout for _ in samples]
        own = self.parallel.share(len(samples))
        # An empty share where the weights are sharded: run the batch's first row at weight 0, since every process
        # takes part in every block's weight gather (forward and backward).
        stand_in = own.start == own.stop and self.parallel.every_rank_runs_model
        if stand_in:
            own = slice(0, 1)
        texts = [
            self._text("", self.data.empty_text) if drop else self._text(s.key, s.text)
            for s, drop in zip(samples[own], dropped[own], strict=True)
        ]
        if len(texts) > 1 and len({t.video.shape for t in texts}) > 1:
            raise ValueError("captions of one batch encode to different lengths; use batch_size 1")
        text = TextContext(
            torch.cat([t.video for t in texts]),
            None if texts[0].audio is None else torch.cat([t.audio for t in texts]),
        ) if texts else None  # None: this process's share of a short batch is empty, the model does not run
        video, audio = collate(samples)
        device = self.backbone.device
        video = video.to(device, torch.float32)
        feed_audio = audio is not None and self.backbone.has_audio and self.modes.audio != "off"
        audio = audio.to(device, torch.float32) if feed_audio else None
        # Batches group clips by shape, references included: a batch has a reference for every clip or for none.
        reference = None
        if self.modes.reference_factor and samples[0].reference is not None:
            reference = torch.stack([s.reference for s in samples]).to(device, torch.float32)
        inp, targets = self.recipe.prepare(video, audio, text, samples[0].frame_rate, self.generator, reference)
        whole = own == slice(0, len(samples)) and not stand_in
        if text is None:  # adds nothing to the step; the same loss parts as the other processes, for the sums
            zero = torch.zeros((), device=device)
            return zero, {n: zero for n, t in (("video", targets.video), ("audio", targets.audio)) if t is not None}
        if not whole:
            inp, targets = _rows(inp, own), _rows(targets, own)
        mixed = self.cfg.memory.mixed_precision == "bf16"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed):
            pred_v, pred_a = self.backbone.velocity(inp)
        loss, parts = self.recipe.loss(pred_v, pred_a, targets)
        if whole:
            return loss, parts
        # The processes' weighted sums are the global batch's mean; a stand-in row adds zeros (its gradients too).
        weight = 0.0 if stand_in else (own.stop - own.start) / len(samples)
        return loss * weight, {n: v * weight for n, v in parts.items()}

    def _check_finite(self, sample: Sample) -> None:
        """Stop with ``NonFiniteLossError`` naming the clip when its cached tensors hold NaN or Inf (host tensors:
        cheap beside a step), before they reach the weights; the checkpoints written so far stay as they are."""
        parts = {"video latent": sample.video, "audio latent": sample.audio, "caption features": sample.text,
                 "reference latent": sample.reference}
        bad = [name for name, t in parts.items() if t is not None and not bool(torch.isfinite(t).all())]
        if bad:
            raise NonFiniteLossError(
                f"clip {sample.key}: its cached {' and '.join(bad)} {'hold' if len(bad) > 1 else 'holds'} NaN or Inf "
                f"values; training stopped at step "
                f"{self.run.step + 1}. The last good checkpoint is {self._last_checkpoint()}. Cache that clip again "
                "(delete its files or change its caption, then run the cache step) or remove it from the dataset"
            )

    def _what_fits(self) -> str | None:
        """After an out-of-memory step: the largest frames / resolution / batch the memory estimate says fit into
        the device memory free now (None when that cannot be measured: not CUDA, or the model's shape is unknown)."""
        free, shape = free_device_memory(self.backbone.device), block_shape_of(self.backbone)
        if free is None or shape is None:
            return None
        pending = 0 if self.optimizer.state else 8 * self.adapters.num_parameters()  # AdamW's moments, not made yet
        return largest_fitting(free, self.data, self.cfg.optimization.batch_size, *shape,
                               self.cfg.memory.gradient_checkpointing, pending)

    def _last_checkpoint(self) -> Path | str:
        return self.writer.written[-1] if self.writer.written else "none yet"

    def _batches(self) -> Iterator[tuple[int, list[int]]]:
        """Endless (epoch, batch) stream from the run's data position.

        Each epoch's batches are a pure function of (seed, batch size, epoch); the samples already trained on in
        the current epoch are left out. With the settings that made them, that skips exactly the batches done, so
        a resumed run continues like an uninterrupted one; with another batch size or seed, the rest of the epoch
        still holds every sample not yet seen in it, once.
        """
        epoch, done = self.run.epoch, set(self.run.seen)
        while True:
            size = self.cfg.optimization.batch_size * self.parallel.world_size  # the global batch
            for batch in epoch_batches(self.data, size, self.cfg.seed, epoch):
                rest = [i for i in batch if i not in done]
                if rest:
                    yield epoch, rest
            epoch, done = epoch + 1, set()

    def _save(self, cb: Callbacks) -> int:
        """Write a checkpoint of the current step (rank 0 of several processes writes it); returns that step."""
        if not self.parallel.is_main:
            return self.run.step
        path = self.writer.save(self.adapters, self.run, self.optimizer, self.scheduler, self.generator)
        zero = self.adapters.zero_b_names()
        if zero:
            log.warning(
                "%s holds %d LoRA layers whose lora_B is still all zeros after %d steps (they had no gradient, so "
                "they change nothing): %s",
                path.name,
                len(zero),
                self.run.step,
                ", ".join(zero),
            )
        if cb.on_checkpoint:
            cb.on_checkpoint(path, self.run.step)
        return self.run.step

    def train(self, callbacks: Callbacks | None = None) -> TrainResult:
        """Run to ``optimization.steps`` holding the run folder's lock (``RunLockedError`` if another run has it).

        Of several processes, rank 0 holds the lock and writes every file; the others wait for it where it writes.
        """
        with ExitStack() as stack:
            with self.parallel.together("starting the run"):
                if self.parallel.is_main:
                    stack.enter_context(RunLock(self.out, self.cfg.name))
                    for prefix in (f"{self.cfg.name}_step_", "loss.png", "config.yaml"):  # what a run writes here
                        for stale in sweep_stale_temps(self.out, prefix):
                            log.info("removed %s, left by a save that was interrupted", stale)
                    write_atomic(self.out / "config.yaml", train_config_yaml(self.cfg))
            return self._train(callbacks or Callbacks())

    def _train(self, cb: Callbacks) -> TrainResult:
        opt = self.cfg.optimization
        self.run.processes = self.parallel.world_size
        self.backbone.set_gradient_checkpointing(self.cfg.memory.gradient_checkpointing)
        wanted = compile_wanted(self.cfg.memory.compile_blocks, self.backbone.device)
        self.compiled_blocks = self.backbone.set_compiled_blocks(wanted, self.cfg.memory.compile_blocks == "on")
        if self.compiled_blocks:
            log.info("transformer blocks run through torch.compile; the first step includes compiling them")
        elif self.cfg.memory.compile_blocks == "on":
            log.warning("memory.compile_blocks is on, but this backbone runs its blocks uncompiled")
        batches = self._batches()
        saved_step, status, message = self.run.step, "completed", ""
        log.info(
            "training %d LoRA layers (%.2fM parameters), pack %s",
            len(self.adapters.names),
            self.adapters.num_parameters() / 1e6,
            __version__,
        )
        with self.backbone.training_session(), self.adapters.attached():
            rng = self._rng_state()
            try:
                while self.run.step < opt.steps:
                    rng = self._rng_state()  # a step interrupted midway has drawn from the RNGs: undo on save
                    t0 = time.perf_counter()
                    loss, parts = self._optimizer_step(batches)
                    self.run.step += 1
                    self.run.losses.append(loss)
                    self.run.seconds.append(time.perf_counter() - t0)
                    if cb.on_step:
                        lr = self.scheduler.get_last_lr()[0]
                        cb.on_step(StepInfo(self.run.step, opt.steps, loss, parts, lr, self.run.seconds[-1]))
                    stop = cb.should_stop is not None and cb.should_stop()
                    if stop or self.run.step % self.cfg.checkpoints.every == 0 or self.run.step == opt.steps:
                        with self.parallel.together(f"saving the checkpoint of step {self.run.step}"):
                            saved_step = self._save(cb)
                    if stop:
                        status, message = "cancelled", f"cancelled at step {self.run.step}; checkpoint saved"
                        break
            except NonFiniteLossError as err:
                status, message = "diverged", str(err)
            except DiskWriteError:
                raise  # a checkpoint could not be written: saving another one would fail the same way
            except torch.cuda.OutOfMemoryError as err:
                # The steps completed so far are saved as on a cancel, then the error says what to lower. The failed
                # step's activations live on in its frames' locals: dropping them frees that memory for the save
                # and lets the free memory measured for the estimate be what the next run would get.
                traceback.clear_frames(err.__traceback__)
                if self.run.step > saved_step:
                    self._set_rng_state(rng)
                    self._save(cb)
                raise TrainingOutOfMemory(
                    out_of_memory_message(err, self.run.step, self.writer.written[-1] if self.writer.written else None,
                                          self.cfg, self._what_fits())
                ) from err
            except BaseException:
                # Cancelled from inside the model (ComfyUI's interrupt, Ctrl-C): keep what was learned so far,
                # with the RNGs as they were at the end of the last completed step, so a resume continues exactly.
                if self.run.step > saved_step:
                    self._set_rng_state(rng)
                    self._save(cb)
                raise
        return TrainResult(
            status,
            self.run.step,
            self.writer.written[-1] if self.writer.written else self.resumed_from,
            self.run.losses,
            self.adapters,
            message,
            list(self.writer.written),
        )

    def _rng_state(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return self.generator.get_state(), torch.get_rng_state(), cuda

    def _set_rng_state(self, state: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]) -> None:
        generator, cpu, cuda = state
        self.generator.set_state(generator)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    def _optimizer_step(self, batches: Iterator[tuple[int, list[int]]]) -> tuple[float, dict[str, float]]:
        opt = self.cfg.optimization
        losses, parts_list, drawn = [], [], []
        with self.parallel.together(f"in step {self.run.step + 1}", model_runs=True):
            for _ in range(opt.gradient_accumulation):
                drawn.append(next(batches))
                loss, parts = self._batch_loss(drawn[-1][1])
                if loss.requires_grad:  # False only where this process's share of a short batch was empty
                    (loss / opt.gradient_accumulation).backward()
                losses.append(loss.detach())
                parts_list.append(parts)
        # One host sync per step, after backward has been queued: the GPU never waits for Python here.
        names = list(parts_list[0])
        rows = [torch.stack([loss, *(p[n] for n in names)]) for loss, p in zip(losses, parts_list, strict=True)]
        table = self.parallel.reduce_sum(torch.stack(rows))
        means = table.float().mean(dim=0).tolist()
        total, parts_mean = means[0], dict(zip(names, means[1:], strict=True))
        if not math.isfinite(total):
            self.optimizer.zero_grad(set_to_none=True)
            clips = ", ".join(self.data[i].key for _, batch in drawn for i in batch)
            raise NonFiniteLossError(
                f"loss became {total} at step {self.run.step + 1} (clips of that step: {clips}); training stopped. "
                f"The last good checkpoint is {self._last_checkpoint()}. Lower optimization.learning_rate (e.g. 5x) "
                "or check those clips."
            )
        self.adapters.grads_to_masters()
        self.parallel.reduce_gradients(self.adapters.masters())
        if opt.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.adapters.masters(), opt.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        if not self.adapters.uses_working_copies:  # else grads_to_masters overwrites every master gradient
            self.optimizer.zero_grad(set_to_none=True)
        self.adapters.refresh_work()
        for epoch, batch in drawn:
            self.run.consumed(epoch, batch)
        return total, parts_mean


# What the checkpoint's tensors are (shape, scale, optimizer state layout) versus what only steers training on.
_FIXED_ON_RESUME = ("lora.rank", "lora.alpha", "lora.targets", "lora.custom_targets", "optimization.optimizer")
_CHANGEABLE_ON_RESUME = ("optimization.learning_rate", "optimization.weight_decay", "optimization.batch_size", "seed")


def _setting(config: dict, dotted: str) -> object:
    """The value of ``section.field`` in a dumped config, or None where the config has no such field."""
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _rows(obj: ModelInput | Targets, rows: slice) -> ModelInput | Targets:
    """``obj`` with its per-sample tensors (batch first) cut to ``rows``; text and scalars stay as they are."""
    cut = {f.name: v[rows] for f in fields(obj) if isinstance(v := getattr(obj, f.name), torch.Tensor)}
    return replace(obj, **cut)


def _host_copy(t: torch.Tensor, pin: bool) -> torch.Tensor:
    return torch.empty_like(t, device="cpu", pin_memory=pin).copy_(t.detach()) if pin else t.detach().to("cpu")
