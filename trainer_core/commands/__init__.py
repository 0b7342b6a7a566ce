"""Sub-commands of ``python -m trainer_core`` (see ``trainer_core.cli``)."""
