"""Per-path failures of a 1-Wire backend, described by what happened.

owserver answers a failed request with an errno whose pyownet text is misleading (errno 1 reads
"Startup - command line parameters invalid" but means "this path does not resolve now"). Both
backends (owserver and the kernel's sysfs) raise :class:`PathError` instead, whose ``kind`` and
``detail`` say what happened in words a user can act on.
"""

from __future__ import annotations

import errno as _errno

#: ``kind`` values: the device or property does not resolve; the bus transaction failed (CRC
#: error, no answer); the property cannot be written or read that way; anything else.
MISSING, BUS, UNSUPPORTED, OTHER = "missing", "bus", "unsupported", "owserver"

_OWSERVER_CODES: dict[int, tuple[str, str]] = {
    1: (MISSING, "no such device or property (owserver cannot resolve the path: device absent or name wrong)"),
    _errno.ENOENT: (MISSING, "no such device or property"),
    _errno.EINVAL: (BUS, "bus error: the device gave no valid answer (CRC error or not responding)"),
    _errno.EIO: (BUS, "bus error: input/output error on the 1-wire bus"),
    _errno.EISDIR: (UNSUPPORTED, "is a directory, not a property"),
    _errno.EOPNOTSUPP: (UNSUPPORTED, "not supported: read-only property, or not implemented by this device"),
    _errno.EACCES: (UNSUPPORTED, "permission denied"),
    _errno.EBUSY: (BUS, "bus busy"),
    _errno.ERANGE: (UNSUPPORTED, "value out of range for this property"),
}


class PathError(Exception):
    """A request for one path failed; the server or bus itself is fine.

    ``kind`` is one of ``missing``, ``bus``, ``unsupported``, ``owserver``; ``detail`` says what
    happened; ``path`` is the path asked for; ``code`` the backend's errno (or None).
    """

    def __init__(self, kind: str, detail: str, path: str, code: int | None = None) -> None:
        super().__init__(f"{path}: {detail}")
        self.kind = kind
        self.detail = detail
        self.path = path
        self.code = code

    @classmethod
    def from_owserver(cls, code: int | None, path: str) -> PathError:
        """The error for owserver's answer ``-code`` to a request for ``path``."""
        kind, detail = _OWSERVER_CODES.get(code or 0, (OTHER, f"owserver error {code}"))
        return cls(kind, detail, path, code)
