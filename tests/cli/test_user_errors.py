"""Every error class defined in trainer_core is a ``UserError`` (one ``error:`` line in the CLI, its message as-is in
ComfyUI) unless it is listed below as internal, with the reason."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import trainer_core
from trainer_core.errors import UserError

# Internal errors: never reach the user, so they need no user-facing message.
INTERNAL = {
    "trainer_core.cache.writer.UnreadableItem": "a signal inside the cache writer: caught there, the item is "
    "recorded as failed and listed in the cache report, the run goes on",
    "trainer_core.config.foreign.Refused": "raised by one mapping rule; translate() gathers every refusal into one "
    "ConfigError naming each key",
}


def _error_classes() -> dict[str, type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(trainer_core.__path__, "trainer_core."):
        if info.name.endswith(".__main__"):  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)  # trainer_core.comfy imports ComfyUI lazily: importable here too
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_error_class_is_a_user_error_or_listed_internal():
    classes = _error_classes()
    assert {"trainer_core.sweep.plan.SweepError", "trainer_core.lorafile.fit.LoraMismatchError"} <= classes.keys()
    not_user = sorted(name for name, cls in classes.items() if not issubclass(cls, UserError))
    assert not_user == sorted(INTERNAL), "define it on trainer_core.errors.UserError, or list it in INTERNAL with why"
    for name in INTERNAL:
        assert not issubclass(classes[name], UserError), f"{name} is a UserError now: drop it from INTERNAL"


def test_user_errors_keep_the_builtin_bases_callers_catch():
    from trainer_core.atomic import DiskWriteError
    from trainer_core.config import ConfigError
    from trainer_core.dataset.media import MediaError
    from trainer_core.ltxcore.model import LtxCoreMissing

    assert issubclass(ConfigError, ValueError) and issubclass(MediaError, ValueError)
    assert issubclass(DiskWriteError, OSError) and issubclass(LtxCoreMissing, ImportError)
    err = DiskWriteError(28, "No space left on the disk while writing /x; free space")
    assert str(err) == "No space left on the disk while writing /x; free space" and err.errno == 28
