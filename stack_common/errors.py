"""The one error type for a configuration that cannot run."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key, its value and the fix.

    Entry points print it as one line (`error: ...`) and exit with status 2."""
