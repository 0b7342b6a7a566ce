"""Whether to run the transformer blocks through ``torch.compile`` (``memory.compile_blocks``).

On CUDA, torch.compile generates Triton kernels and builds them with the machine's C compiler. A missing or
broken toolchain would otherwise surface as a long Inductor traceback in the middle of the first step, so
``auto`` first compiles a one-line function on the device and trains uncompiled (with a warning) if that fails,
and ``on`` turns the failure into an error that says what to do.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import torch

from ..config import ConfigError

log = logging.getLogger(__name__)


@functools.cache
def _compile_failure(device: str) -> str | None:
    """None when torch.compile works on ``device``, else the reason (probed once per process and device)."""
    if device.startswith("cuda") and importlib.util.find_spec("triton") is None:
        return "Triton is not installed (torch.compile needs it on CUDA): pip install triton"
    try:
        x = torch.arange(8.0, device=device)
        torch.testing.assert_close(torch.compile(lambda t: t * 2 + 1, dynamic=False)(x), x * 2 + 1)
    except Exception as err:  # noqa: BLE001 - any failure means: do not compile the blocks
        return f"torch.compile failed on {device}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def compile_wanted(setting: str, device: torch.device) -> bool:
    """Resolve ``memory.compile_blocks``: auto compiles on CUDA when torch.compile works there."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return False
    failure = _compile_failure(str(device))
    if failure is None:
        return True
    if setting == "on":
        raise ConfigError(f"memory.compile_blocks is 'on' but {failure}; or set compile_blocks to auto or off")
    log.warning("training with uncompiled blocks (slower): %s", failure)
    return False
