"""The base class of every error a user can fix: a bad config, input file, LoRA or folder, a full disk.

Its message says what is wrong and what to do, so the CLI prints it as one ``error:`` line (exit status 2) and
ComfyUI shows it under the node as it is; anything else is a bug and keeps its traceback. Subclasses keep the
builtin base their callers catch (``ValueError``, ``OSError``, ...) beside this one.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; ``str(err)`` is the whole message, naming the file or field and the remedy."""
