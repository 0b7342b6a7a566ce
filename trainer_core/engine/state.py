"""Resumable run state, stored without pickle: tensors in safetensors, everything else in JSON.

Beside each LoRA checkpoint ``<name>_step_00250.safetensors`` the engine writes
``<name>_step_00250.state.tensors`` (optimizer moments, RNG states; safetensors format) and
``<name>_step_00250.state.json`` (step, data position, scheduler, optimizer hyper-parameters, loss history).
The JSON is written last and records the size and sha256 of the other two files and a checksum of itself, so a
checkpoint whose save was interrupted (no JSON) or whose files were damaged later is recognised before resuming.
Together with the LoRA weights that is everything a resumed run needs to continue exactly where the interrupted one
stopped. The tensors file does not end in ``.safetensors`` because ComfyUI lists every ``.safetensors`` file under
``models/loras`` (hidden folders included) in its LoRA menus, and optimizer state is not a LoRA.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..atomic import save_safetensors, write_atomic
from ..config import ConfigError
from ..errors import UserError

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """Mutable progress of a run: the step last completed, the loss after every step and the data position.

    ``seen`` lists the samples trained on so far in epoch ``epoch``: a resumed run leaves them out of that epoch.
    ``processes``: how many processes trained together (``torchrun``); their global batch is that many times
    ``optimization.batch_size``, which a resume needs to know whether its batches continue the same way.
    """

    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    epoch: int = 0
    seen: list[int] = field(default_factory=list)
    processes: int = 1

    def consumed(self, epoch: int, batch: list[int]) -> None:
        """Record that ``batch`` of ``epoch`` went into a completed step."""
        if epoch != self.epoch:
            self.epoch, self.seen = epoch, []
        self.seen.extend(batch)


class CheckpointDamaged(UserError, ValueError):
    """A checkpoint cannot be resumed: a file is missing, truncated or fails its checksum."""


STATE_TENSORS_SUFFIX = ".state.tensors"
_OLD_TENSORS_SUFFIX = ".state.safetensors"  # earlier versions of this pack wrote this name; still resumable


def state_paths(lora_path: Path) -> tuple[Path, Path]:
    """The state files (tensors, JSON) that belong to the LoRA checkpoint ``lora_path``."""
    stem = lora_path.with_suffix("")
    return stem.with_name(stem.name + STATE_TENSORS_SUFFIX), stem.with_name(stem.name + ".state.json")


def _existing_state_paths(lora_path: Path) -> tuple[Path, Path]:
    """``state_paths``, with the tensors file under its old name where only that exists."""
    tensors, json_path = state_paths(lora_path)
    old = tensors.with_name(tensors.name.removesuffix(STATE_TENSORS_SUFFIX) + _OLD_TENSORS_SUFFIX)
    return (old if not tensors.is_file() and old.is_file() else tensors), json_path


def save_state(
    lora_path: Path,
    run: RunState,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Write the state tensors that belong to the LoRA checkpoint at ``lora_path``; return the JSON part.

    ``seal_state`` writes that JSON once the LoRA file is written too.
    """
    tensors_path, json_path = state_paths(lora_path)
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {
        "rng.torch": torch.get_rng_state(),
        "rng.generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in opt["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = float(value)
    meta = {
        "step": run.step,
        "losses": run.losses,
        "seconds": run.seconds,
        "data": {"epoch": run.epoch, "seen": run.seen, "processes": run.processes},
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
        "scheduler": scheduler.state_dict(),
    }
    save_safetensors(tensors_path, tensors)
    return meta


_FILES, _CHECKSUM = "files", "checksum"  # JSON keys: the other files' digests, the JSON's own


def seal_state(lora_path: Path, meta: dict[str, Any]) -> None:
    """Write the state JSON ``meta`` with the checksums of the LoRA and state tensors files, atomically.

    Called once both files are complete: a checkpoint without its JSON is one whose save never finished.
    """
    tensors_path, json_path = state_paths(lora_path)
    sealed = {**meta, _FILES: {"lora": _digest(lora_path), "state": _digest(tensors_path)}}
    write_atomic(json_path, json.dumps({**sealed, _CHECKSUM: _json_checksum(sealed)}))


def _digest(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return {"bytes": path.stat().st_size, "sha256": hashlib.file_digest(fh, "sha256").hexdigest()}


def _json_checksum(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def checkpoint_problem(lora_path: Path) -> str | None:
    """What makes the checkpoint ``lora_path`` unusable for a resume (missing, truncated, corrupt file), or None.

    Checkpoints written before checksums existed are only checked for their files' presence.
    """
    tensors_path, json_path = _existing_state_paths(lora_path)
    for path in (lora_path, json_path, tensors_path):
        if not path.is_file():
            return f"{path.name} is missing (its save did not finish, or it was deleted)"
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{json_path.name} is unreadable ({err})"
    if not isinstance(meta, dict):
        return f"{json_path.name} is not a state file of this trainer"
    if _CHECKSUM not in meta:
        return None
    recorded = meta.pop(_CHECKSUM)
    if recorded != _json_checksum(meta) or not isinstance(meta.get(_FILES), dict):
        return f"{json_path.name} does not match its checksum (the file was changed or damaged)"
    for role, path in (("lora", lora_path), ("state", tensors_path)):
        want = meta[_FILES].get(role) or {}
        size = path.stat().st_size
        if size != want.get("bytes"):
            return f"{path.name} is {size} bytes, {want.get('bytes')} were written (truncated or replaced)"
        if _digest(path)["sha256"] != want.get("sha256"):
            return f"{path.name} does not match its checksum (corrupt)"
    return None


def has_state(lora_path: Path) -> bool:
    """Whether the checkpoint ``lora_path`` has both state files beside it (it can be resumed)."""
    return all(p.is_file() for p in _existing_state_paths(lora_path))


def load_state(
    lora_path: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    generator: torch.Generator,
) -> RunState:
    """Restore the optimizer moments, schedule position and RNG states saved by ``save_state``; return the progress.

    Hyper-parameters stay those of ``optimizer`` and ``scheduler`` as built from the current config (learning
    rate, weight decay, schedule shape): the learning rate becomes the current schedule's at the checkpoint's step.
    """
    tensors_path, json_path = _existing_state_paths(lora_path)
    if not has_state(lora_path):
        raise ConfigError(
            f"{lora_path} has no training state beside it ({tensors_path.name}, {json_path.name}); "
            "only checkpoints written by this pack's trainer can be resumed"
        )
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    tensors = load_file(str(tensors_path))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["optimizer"]["scalars"].items():
        for name, v in values.items():
            state.setdefault(int(idx), {})[name] = torch.tensor(v)
    # The current param groups, not the saved ones: those carry the checkpoint's lr, weight decay and device flags.
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    if torch.cuda.is_available():
        cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
        cuda = [tensors[k] for k in cuda_keys]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    data = meta.get("data")
    if data is None:
        log.warning("%s predates saved data positions: the resumed run starts its data order at epoch 0", json_path)
        data = {"epoch": 0, "seen": []}
    return RunState(
        step=int(meta["step"]), losses=list(meta["losses"]), seconds=list(meta["seconds"]),
        epoch=int(data["epoch"]), seen=[int(i) for i in data["seen"]], processes=int(data.get("processes", 1)),
    )
