"""One validated configuration schema: it drives node widgets, YAML files and the CLI."""

from .base import ConfigError, Section, dump_yaml, knob, load_yaml, parse_section

__all__ = ["ConfigError", "Section", "dump_yaml", "knob", "load_yaml", "parse_section"]
