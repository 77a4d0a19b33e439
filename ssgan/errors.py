"""The one exception type the CLI turns into a one-line error (no traceback)."""


class SSGANError(Exception):
    """A user-facing error: bad config, bad data, unreachable store. The message says how to fix it."""


class ConfigError(SSGANError):
    """A config key is unknown, mistyped or out of range."""


class DataError(SSGANError):
    """The data cannot be found, read or split as asked."""
