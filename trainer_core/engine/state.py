"""Resumable run state, stored without pickle: tensors in safetensors, everything else in JSON.

Beside each LoRA checkpoint ``<name>_step_00250.safetensors`` the engine writes
``<name>_step_00250.state.safetensors`` (optimizer moments, RNG states) and ``<name>_step_00250.state.json``
(step, scheduler, optimizer hyper-parameters, loss history). Together with the LoRA weights that is everything
a resumed run needs to continue exactly where the interrupted one stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..atomic import save_safetensors, write_atomic


@dataclass
class RunState:
    """Mutable progress of a run: the step last completed and the loss after every step."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def state_paths(lora_path: Path) -> tuple[Path, Path]:
    stem = lora_path.with_suffix("")
    return stem.with_name(stem.name + ".state.safetensors"), stem.with_name(stem.name + ".state.json")


def save_state(
    lora_path: Path,
    run: RunState,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> None:
    """Write the state files that belong to the LoRA checkpoint at ``lora_path``."""
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
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
        "scheduler": scheduler.state_dict(),
    }
    save_safetensors(tensors_path, tensors)
    write_atomic(json_path, json.dumps(meta))


def has_state(lora_path: Path) -> bool:
    return all(p.is_file() for p in state_paths(lora_path))


def load_state(
    lora_path: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> RunState:
    """Restore optimizer, scheduler and RNG states saved by ``save_state``; return the run's progress."""
    tensors_path, json_path = state_paths(lora_path)
    if not has_state(lora_path):
        raise FileNotFoundError(
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
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    if torch.cuda.is_available():
        cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
        cuda = [tensors[k] for k in cuda_keys]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return RunState(step=int(meta["step"]), losses=list(meta["losses"]), seconds=list(meta["seconds"]))
