"""The one place a node's ``validate_inputs`` turns the pack's user errors into ComfyUI's refusal message."""

from __future__ import annotations

from collections.abc import Callable

from ..trainer_core.errors import UserError


def validation_result(check: Callable[[], object]) -> bool | str:
    """Run ``check``: True when it passes, else the message of the ``UserError`` it raised.

    ComfyUI refuses to queue a node whose ``validate_inputs`` returns a string and shows it under the node, so the
    user sees the same message the CLI prints; any other exception is a bug and keeps its traceback.
    """
    try:
        check()
    except UserError as err:
        return str(err)
    return True
