"""The base class of every node of the pack: a user error raised while a node runs reaches ComfyUI as its message.

ComfyUI shows a node's exception as its message followed by the traceback of the whole stack, and logs that
traceback in its console. For a ``UserError`` (a bad file or setting the user can fix) the frames inside
``trainer_core`` only bury the message, so ``PackNode`` logs them (INFO, with the full traceback) and re-raises the
same error with its traceback cut at the node. Any other exception is a bug and keeps every frame.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from comfy_api.latest import io

from ..trainer_core.errors import UserError

log = logging.getLogger(__name__)


def _cut_user_errors(execute: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(execute)
    def run(cls, *args, **kwargs):
        try:
            return execute(cls, *args, **kwargs)
        except UserError as err:
            node = cls.SCHEMA.node_id if cls.SCHEMA is not None else cls.__name__  # set once ComfyUI listed it
            log.info("%s stopped on a user error; technical detail:", node, exc_info=True)
            raise err.with_traceback(None) from None

    run.cuts_user_errors = True  # ComfyUI re-creates node classes (clones) from their __dict__: wrap only once
    return run


class PackNode(io.ComfyNode):
    """A V3 node whose ``execute`` raises the pack's user errors without the frames below the node."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        execute = cls.__dict__.get("execute")
        if execute is None or getattr(execute.__func__, "cuts_user_errors", False):
            return
        if inspect.iscoroutinefunction(execute.__func__):
            raise TypeError(f"{cls.__name__}.execute is async; PackNode wraps only a plain execute")
        cls.execute = classmethod(_cut_user_errors(execute.__func__))
