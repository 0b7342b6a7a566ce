"""Checkpoint files of a run: naming, writing (LoRA + resumable state), pruning and finding the latest."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..atomic import DiskWriteError
from ..config import ConfigError
from ..lora.adapter import LoraAdapters
from ..lorafile.metadata import lora_metadata
from ..lorafile.write import save_lora_file
from ..paths import resolved
from .state import CheckpointDamaged, RunState, checkpoint_problem, save_state, seal_state, state_paths

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^(?P<name>.+)_step_(?P<step>\d{5,})\.safetensors$")


def checkpoint_path(output_dir: Path, name: str, step: int) -> Path:
    return output_dir / f"{name}_step_{step:05d}.safetensors"


def list_checkpoints(folder: Path, name: str | None = None) -> list[tuple[int, Path]]:
    """LoRA checkpoints in ``folder`` (optionally of run ``name``), sorted by step."""
    found = []
    for p in folder.glob("*_step_*.safetensors"):
        m = _STEP_RE.match(p.name)
        if m and (name is None or m["name"] == name) and not p.name.endswith(".state.safetensors"):
            found.append((int(m["step"]), p))
    return sorted(found)


def newest_intact(found: list[tuple[int, Path]], label: str = "resume_from") -> Path:
    """The newest checkpoint of ``found`` (sorted by step) whose files are complete and match their checksums.

    Each damaged one skipped on the way is logged with what is wrong; ``CheckpointDamaged`` when none is intact.
    """
    problems = []
    for _, path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            if problems:
                log.warning("%s: resuming from %s, the newest intact checkpoint", label, path.name)
            return path
        log.warning("%s: checkpoint %s is damaged, skipped: %s", label, path.name, problem)
        problems.append(f"{path.name}: {problem}")
    raise CheckpointDamaged(
        f"{label}: no intact checkpoint to resume from in {found[-1][1].parent}:\n  " + "\n  ".join(problems)
        + "\nStart a new run without resuming, or restore the files from a backup"
    )


def resume_candidates(
    value: str, run_dir: Path, also_in: tuple[Path, ...] = (), label: str = "resume_from", within: Path | None = None
) -> list[Path]:
    """Where a ``value`` other than ``latest`` may name a checkpoint or run (see ``resolve_resume``), in the order
    looked; with ``within``, only those inside it, and ``ConfigError`` when none is. Reads nothing, so a node checks
    this before its graph runs."""
    value = value.strip()
    path = Path(value).expanduser()
    tried = [path] if path.is_absolute() else [base / path for base in (run_dir, *also_in, run_dir.parent)]
    if within is None:
        return tried
    tried = [p for p in tried if resolved(p, label, value).is_relative_to(within.resolve())]
    if not tried:
        raise ConfigError(
            f"{label} {value!r} leads outside {within}, where this run's checkpoints and the other runs are; "
            "give 'latest', a checkpoint file or run folder inside it, or the name of a run"
        )
    return tried


def resolve_resume(
    value: str,
    run_dir: Path,
    name: str,
    also_in: tuple[Path, ...] = (),
    label: str = "resume_from",
    within: Path | None = None,
) -> Path:
    """The checkpoint that ``value`` names, for run ``name`` writing its checkpoints to ``run_dir``.

    ``value`` is one of: ``latest`` (this run's newest checkpoint in ``run_dir``); a checkpoint file, absolute or
    relative to ``run_dir`` (or to a folder of ``also_in``); a run folder, absolute or relative, or the name of
    another run beside ``run_dir`` (its newest checkpoint). ``ConfigError`` names the setting (``label``), the value and
    every place looked.

    ``within``: the folder every candidate must stay inside, symlinks resolved (the Train node passes ComfyUI's loras
    folder: its value comes from a browser). A value that only leads outside is refused whether or not something
    exists there, so the message reveals nothing about other folders. None: anywhere (the CLI's user names files
    on their own machine).
    """
    value = value.strip()
    if value == "latest":
        found = list_checkpoints(run_dir, name) if run_dir.is_dir() else []
        if not found:
            raise ConfigError(f"{label} 'latest': no checkpoint named {name}_step_*.safetensors in {run_dir}")
        return newest_intact(found, label)
    tried = resume_candidates(value, run_dir, also_in, label, within)
    for candidate in tried:
        if candidate.is_file():
            return candidate
        if candidate.is_dir():
            found = list_checkpoints(candidate)
            if found:
                return newest_intact(found, label)
    raise ConfigError(
        f"{label} {value!r}: no checkpoint file or run folder with *_step_*.safetensors checkpoints at "
        f"{', '.join(str(p) for p in tried)}; give 'latest', a checkpoint file (absolute or relative to {run_dir}) "
        "or the name of a run"
    )


class CheckpointWriter:
    """Writes ``<name>_step_NNNNN.safetensors`` plus its state files and keeps the newest ``keep_last``."""

    def __init__(self, output_dir: Path, name: str, keep_last: int, metadata: dict) -> None:
        self.output_dir = output_dir
        self.name = name
        self.keep_last = keep_last
        self.metadata = metadata  # rank, alpha, targets, trigger, fingerprint, config, base model
        self.written: list[Path] = []

    def save(
        self,
        adapters: LoraAdapters,
        run: RunState,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
    ) -> Path:
        """Write the checkpoint of ``run.step``; a failed write leaves none of its files behind.

        A full disk or an unwritable folder raises ``DiskWriteError`` naming the file and ``output_dir``.
        """
        path = checkpoint_path(self.output_dir, self.name, run.step)
        meta = lora_metadata(step=run.step, **self.metadata)
        try:
            # The state JSON last, with the others' checksums: without it the checkpoint is not resumable.
            state = save_state(path, run, optimizer, scheduler, generator)
            save_lora_file(path, adapters.to_comfy_state_dict(), meta)
            seal_state(path, state)
        except DiskWriteError as err:
            _delete(path)
            raise DiskWriteError(err.errno, f"{err.strerror} (output_dir: {self.output_dir})") from err
        except BaseException:
            _delete(path)
            raise
        self.written.append(path)
        log.info("saved checkpoint %s", path)
        self._prune()
        return path

    def _prune(self) -> None:
        """Delete this run's oldest checkpoints beyond ``keep_last`` (never files this run did not write)."""
        if self.keep_last <= 0:
            return
        while len(self.written) > self.keep_last:
            _delete(self.written.pop(0))


def _delete(path: Path) -> None:
    """Remove the checkpoint ``path`` and its state files (after a failed save, some may be new and some old)."""
    for p in (path, *state_paths(path)):
        p.unlink(missing_ok=True)
