"""The one error of planning: a config value or key that trd cannot run."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config value or key that trd cannot run; the message is one line naming it and the fix."""
