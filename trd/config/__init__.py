"""Plan-time configuration: typed nodes checked at submission, with one-line errors (see schema.py)."""
from trd.config.errors import ConfigError
from trd.config.schema import parse, plain, to_data

__all__ = ["ConfigError", "parse", "plain", "to_data"]
