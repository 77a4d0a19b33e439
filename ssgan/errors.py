"""The one exception type the CLI turns into a one-line error (no traceback)."""


class SSGANError(Exception):
    """A user-facing error: bad config, bad data, unreachable store. The message says how to fix it."""


class ConfigError(SSGANError):
    """A config key is unknown, mistyped or out of range."""


class DataError(SSGANError):
    """The data cannot be found, read or split as asked."""


class DiskFullError(SSGANError):
    """A write failed because the disk (or the quota) is full."""


def disk_full(path, error: BaseException):
    """A `DiskFullError` naming `path` and its free space when `error` came from a full disk, else None. torch
    reports a full disk as a RuntimeError ("unexpected pos"), not ENOSPC, so the free space decides too."""
    import errno
    import shutil
    from pathlib import Path

    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if not (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) and free >= 1 << 20:
        return None
    return DiskFullError(f"the disk is full: cannot write {path} ({free // 1024} KiB free in {folder}); free space "
                         "there or choose another --out")
