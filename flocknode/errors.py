"""Error types that reach the user as one line, never a traceback."""

from __future__ import annotations


class FlockError(Exception):
    """Base of errors the CLI prints as a single line and exits with a code."""

    exit_code = 1


class ConfigError(FlockError):
    """A bad config file, flag or environment variable: names the source and the key."""

    exit_code = 2

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class KeyFileError(ConfigError):
    """A key or keystore file that is missing, unreadable, too open or malformed."""
