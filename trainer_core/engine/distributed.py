"""Data parallel training over several processes (``torchrun --nproc_per_node N -m trainer_core train``).

The Trainer sees this module through one small interface, ``SingleProcess``: which rows of a global batch this
process trains on (``share``), the sums across processes (``reduce_sum``, ``reduce_gradients``), whether it writes
files (``is_main``) and ``together``, which makes a failure on one process stop all of them with its message.
``SingleProcess`` is the plain run (the whole batch, no communication); ``DataParallel`` is one of N processes.

Every process draws the random numbers of the whole global batch (noise, sigma, caption dropout) from the same
generator, as one process with that batch would, and runs the model on its rows only. Each process's loss is
weighted by its share of the batch and the LoRA gradients are summed, which is their mean over the global batch:
N processes with batch b train the same LoRA as one process with batch N*b (a short last batch of a bucket
included, where some processes get fewer rows or none).

``ShardedDataParallel`` (``distributed.strategy: fsdp``) is the same data parallel run with the frozen base weights
split over the processes by FSDP2 (``torch.distributed.fsdp.fully_shard``): each process keeps 1/N of every
transformer block and gathers a block's weights for its forward and again for its backward. The LoRA lives outside
the model, whole on every process, so its gradients, optimizer and checkpoints are those of ``DataParallel``. Each
block's gather is a collective, so every process runs the model at every micro-step (``every_rank_runs_model``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import UserError

log = logging.getLogger(__name__)

# Long enough for a checkpoint save or a preview on rank 0 while the others wait, short enough that a process that
# hangs stops the run in minutes, not torch's default half hour.
TIMEOUT = timedelta(minutes=10)
CLOSE_WAIT = timedelta(seconds=30)
_BUCKET = 1 << 24  # gradient elements per all-reduce: few calls, bounded extra memory


class RankFailed(UserError, RuntimeError):
    """Another process of a multi-process run failed; the message is its rank and its error."""


class RendezvousFailed(UserError, RuntimeError):
    """This process could not join the others of a multi-process run (the launcher's address, port or count)."""


class SingleProcess:
    """One process trains on whole batches; nothing to communicate."""

    rank = 0
    world_size = 1
    # Whether a process whose share of a batch is empty must still run the model (its weights are gathered from
    # every process, so all take part in every forward and backward).
    every_rank_runs_model = False

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (checkpoints, config.yaml) and reports progress."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """The rows of a global batch of ``n`` samples that this process trains on."""
        return slice(0, n)

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes."""
        return t

    def from_main(self, value: object) -> object:
        """Rank 0's ``value`` (picklable), on every process: what only rank 0 worked out, such as a path it wrote."""
        return value

    def reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over the processes (each already weighted by its share of the batch)."""

    @contextmanager
    def together(self, what: str, model_runs: bool = False) -> Iterator[None]:
        """Run the body on every process; if it raises on any of them, raise on all (see ``DataParallel``).
        ``model_runs``: the body runs the model (see ``ShardedDataParallel.together``)."""
        yield

    def close(self, failed: bool = False) -> None:
        """Leave the process group (nothing to leave here); ``failed``: this process is ending with an error."""


class DataParallel(SingleProcess):
    """Process ``rank`` of ``world_size`` in an initialised ``torch.distributed`` process group."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.failure_shared = False  # a failure was reported to every process (``together``)

    @classmethod
    def start(cls, device_type: str, init_method: str = "env://", rank: int | None = None,
              world_size: int | None = None, timeout: timedelta = TIMEOUT) -> DataParallel:
        """Join the process group (``torchrun`` sets ``RANK`` and ``WORLD_SIZE``; tests pass them): NCCL on CUDA,
        gloo on the CPU. ``timeout``: how long to wait for the other processes, here and in every collective."""
        backend = "nccl" if device_type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, init_method=init_method, timeout=timeout,
                                    rank=-1 if rank is None else rank,
                                    world_size=-1 if world_size is None else world_size)
        except (RuntimeError, ValueError) as err:  # torch's DistNetworkError/DistStoreError, or a bad env value
            raise RendezvousFailed(_rendezvous_problem(init_method, rank, world_size, timeout, err)) from None
        return cls(dist.get_rank(), dist.get_world_size())

    def share(self, n: int) -> slice:
        # Contiguous rows, the first n % world_size processes one more: a pure function of (n, rank, world_size).
        q, extra = divmod(n, self.world_size)
        start = self.rank * q + min(self.rank, extra)
        return slice(start, start + q + (self.rank < extra))

    def from_main(self, value: object) -> object:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @torch.no_grad()
    def reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        # A layer no process reached keeps no gradient (the optimizer skips it, as in one process); one reached
        # somewhere gets zeros where it was not (a process whose share of a short batch was empty).
        reached = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
        dist.all_reduce(reached, op=dist.ReduceOp.MAX)
        grads = []
        for p, hit in zip(params, reached.tolist(), strict=True):
            if hit:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
        bucket: list[torch.Tensor] = []
        for g in grads:
            bucket.append(g)
            if sum(b.numel() for b in bucket) >= _BUCKET:
                _all_reduce_flat(bucket)
                bucket = []
        if bucket:
            _all_reduce_flat(bucket)

    @contextmanager
    def together(self, what: str, model_runs: bool = False) -> Iterator[None]:
        """Every process reports whether the body failed; if any did, the failing ones re-raise their error and the
        others raise ``RankFailed`` naming the first failing rank, ``what`` it was doing and its message, so no
        process is left waiting in a collective for one that is gone. Doubles as a barrier."""
        failure: Exception | None = None
        try:
            yield
        except Exception as err:  # noqa: BLE001 - re-raised below on this rank, after the others hear of it
            failure = err
        reports: list[str | None] = [None] * self.world_size
        mine = None if failure is None else f"{type(failure).__name__}: {failure}"
        dist.all_gather_object(reports, mine)
        self.failure_shared = any(msg is not None for msg in reports)
        if failure is not None:
            raise failure
        failed = [(rank, msg) for rank, msg in enumerate(reports) if msg is not None]
        if failed:
            rank, msg = failed[0]
            raise RankFailed(f"rank {rank} of {self.world_size} failed {what}, so every rank stopped: {msg}")

    def close(self, failed: bool = False) -> None:
        """Leave the process group, on gloo together with the other processes: one that tears its connections down
        while another still finishes its own can abort that one ("terminate called without an active exception",
        seen in the CPU tests). A process ending with an error the others did not hear of (raised outside
        ``together``, or inside the model under fsdp) leaves at once instead: they wait in a collective it will
        never join, and a barrier would wait with them (seen: gloo's monitored barrier hung past its own timeout, for
        minutes). Its exit then ends the run: the launcher stops the others."""
        if not dist.is_initialized() or (failed and not self.failure_shared):
            return
        if dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=CLOSE_WAIT)
            except RuntimeError as err:
                log.warning("leaving the process group without the other processes: %s", str(err).splitlines()[0])
        dist.destroy_process_group()


class ShardedDataParallel(DataParallel):
    """``DataParallel`` whose processes also split the frozen base weights (FSDP2); see the module docstring."""

    every_rank_runs_model = True

    @contextmanager
    def together(self, what: str, model_runs: bool = False) -> Iterator[None]:
        """As ``DataParallel.together``, except where the body runs the model: a process failing there leaves the
        others inside a weight gather that it will never join, so it raises its error at once (the CLI prints it
        and exits, and ``torchrun`` then stops the other processes) instead of waiting for their reports."""
        if not model_runs:
            with super().together(what):
                yield
            return
        try:
            yield
        except Exception as err:
            log.error("rank %d of %d failed %s: %s: %s (the other processes wait in a weight gather until the "
                      "launcher stops them, once this one has exited)", self.rank, self.world_size, what,
                      type(err).__name__, err)
            raise

    def shard(self, blocks: list[torch.nn.Module], root: torch.nn.Module, device: torch.device | str) -> None:
        """Split the weights of each of ``blocks`` (one gather each, freed after its forward and its backward) and
        of the rest of ``root`` (gathered for the whole step) over the processes, on ``device``.

        Every base weight must be frozen already: FSDP2 then keeps no gradient for them and reduces nothing.
        """
        try:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
        except ImportError as err:  # fully_shard is public from torch 2.6 on
            raise UserError(
                f"distributed.strategy fsdp needs torch >= 2.6 (FSDP2's fully_shard); this is torch "
                f"{torch.__version__} ({err}). Upgrade torch, or set distributed.strategy: ddp"
            ) from None
        trainable = [n for n, p in root.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(f"fully_shard expects frozen base weights; these require grad: {trainable[:3]}")
        mesh = init_device_mesh(torch.device(device).type, (self.world_size,))
        for block in blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(root, mesh=mesh)


def _all_reduce_flat(tensors: list[torch.Tensor]) -> None:
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    torch._foreach_copy_(tensors, [v.view_as(t) for v, t in zip(flat.split([t.numel() for t in tensors]), tensors,
                                                                   strict=True)])


def _rendezvous_problem(init_method: str, rank: int | None, world_size: int | None, timeout: timedelta,
                        err: Exception) -> str:
    env = os.environ.get
    rank = env("RANK", "?") if rank is None else rank
    world_size = env("WORLD_SIZE", "?") if world_size is None else world_size
    where = (f"MASTER_ADDR={env('MASTER_ADDR', '(not set)')}, MASTER_PORT={env('MASTER_PORT', '(not set)')}"
             if init_method == "env://" else init_method)
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return (
        f"process {rank} of {world_size} (RANK, WORLD_SIZE) could not join the other processes at {where} (waiting "
        f"up to {timeout.total_seconds():g} s for them): {reason}. Start every process with the same launcher "
        "settings: torchrun --nproc_per_node (x --nnodes) or accelerate launch --num_processes must make WORLD_SIZE "
        "processes, all with one --master_addr / --master_port (accelerate: --main_process_ip / "
        "--main_process_port) that names a machine of the run every machine can reach and a free port that no "
        "firewall blocks; on one machine, torchrun --standalone picks them itself"
    )


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher setting ``WORLD_SIZE``) with N > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def tell_launcher(message: str) -> None:
    """Leave ``message`` where ``torchrun`` (torchelastic, also under ``accelerate launch``) looks for a failed
    process's error (``TORCHELASTIC_ERROR_FILE``), so its summary of the failure shows that message instead of a
    link to its docs: with several processes writing to one terminal, the summary is what the user reads last."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:  # a plain string message is shown as it is
        Path(path).write_text(json.dumps({"message": message, "timestamp": int(time.time())}), encoding="utf-8")
    except OSError as err:  # called while an error ends the run: that error, not this one, is what the user needs
        log.warning("could not leave the error for the launcher in %s (TORCHELASTIC_ERROR_FILE): %s", path, err)


def local_rank() -> int:
    """This process's index on its host (``LOCAL_RANK``, set by the launcher): the GPU it trains on."""
    return int(os.environ.get("LOCAL_RANK", "0"))
