"""``torchrun ... tests/distributed/failing_rank.py RANK:WHERE -- train CONFIG``: the CLI (``trainer_core.cli.main``)
with a fault injected on process RANK only. WHERE ``load``: loading the model fails, outside any step, while the
other process goes on to start the run. WHERE a step number: the process's second transformer block raises in that
step's forward, after the other process has joined the step's weight gathers (fsdp). The fault lives here, in the
test, not in the pack."""

from __future__ import annotations

import os
import sys

from trainer_core.cli import main
from trainer_core.errors import UserError
from trainer_core.ltxcore.backbone import LtxCoreBackbone


class InjectedFault(UserError, RuntimeError):
    pass


def _fail_loading(rank: str) -> None:
    def failing(*_args, **_kwargs) -> LtxCoreBackbone:
        raise InjectedFault(f"the checkpoint could not be read (injected on rank {rank})")

    LtxCoreBackbone.from_checkpoint = failing


def _fail_in_step(rank: str, step: int) -> None:
    velocity, calls = LtxCoreBackbone.velocity, []

    def failing(self: LtxCoreBackbone, inp):
        calls.append(1)
        if len(calls) == step:
            def fail(*_):
                raise InjectedFault(f"block 1 failed in its forward (injected on rank {rank}, step {step})")

            self.transformer.transformer_blocks[1].register_forward_pre_hook(fail)
        return velocity(self, inp)

    LtxCoreBackbone.velocity = failing


if __name__ == "__main__":
    rank, where = sys.argv[1].split(":")
    if os.environ.get("RANK") == rank:
        _fail_loading(rank) if where == "load" else _fail_in_step(rank, int(where))
    sys.exit(main(sys.argv[3:]))
