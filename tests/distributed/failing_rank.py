"""``torchrun ... tests/distributed/failing_rank.py STEP -- train CONFIG``: the CLI (``trainer_core.cli.main``) with
a fault injected on rank 1 only: its second transformer block raises in step STEP's forward, after the other
process has joined that step's weight gathers. The fault lives here, in the test, not in the pack."""

from __future__ import annotations

import os
import sys

from trainer_core.cli import main
from trainer_core.errors import UserError
from trainer_core.ltxcore.backbone import LtxCoreBackbone


class InjectedFault(UserError, RuntimeError):
    pass


def _inject(step: int) -> None:
    velocity, calls = LtxCoreBackbone.velocity, []

    def failing(self: LtxCoreBackbone, inp):
        calls.append(1)
        if len(calls) == step:
            def fail(*_):
                raise InjectedFault(f"block 1 failed in its forward (injected on rank 1, step {step})")

            self.transformer.transformer_blocks[1].register_forward_pre_hook(fail)
        return velocity(self, inp)

    LtxCoreBackbone.velocity = failing


if __name__ == "__main__":
    if os.environ.get("RANK") == "1":
        _inject(int(sys.argv[1]))
    sys.exit(main(sys.argv[3:]))
