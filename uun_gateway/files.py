"""Writing files so that a crash or power cut leaves either the old or the new content, never a mix;
reading files a user names (configs, secrets) without blocking on a FIFO or reading a device dry."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

MAX_SECRET_BYTES = 64 * 1024
"""The largest file :func:`read_secret_file` reads: a password is a line."""


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` of them. A FIFO, a device
    or a directory is refused without blocking on it (``O_NONBLOCK``). Raises :class:`OSError`
    naming the file for those, for a larger file and for any failure to read it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        size = f"{max_bytes // (1024 * 1024)} MiB" if max_bytes % (1024 * 1024) == 0 else f"{max_bytes // 1024} KiB"
        raise OSError(errno.EFBIG, f"larger than {size}", str(path))
    return data


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of a file holding a secret (a password file), at most :data:`MAX_SECRET_BYTES`.
    Raises :class:`OSError` naming the file, as :func:`read_regular_file` does, also for text
    that is not UTF-8; the message never contains the file's content."""
    data = read_regular_file(path, MAX_SECRET_BYTES)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise OSError(errno.EINVAL, "not UTF-8 text", str(path)) from None


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int | None = None) -> None:
    """Replace the file at ``path`` with ``data`` atomically and durably.

    At every instant the path holds either the old complete file or the new one, and when this
    returns the new one survives a power cut. ``mode`` sets the file's permissions; by default an
    existing file keeps its mode and a new one gets 0600 (what we write often holds secrets).
    The directory must exist. Raises :class:`OSError`; no temporary file is left behind.
    """
    target = Path(path)
    if mode is None:
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o600
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
