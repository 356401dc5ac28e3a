"""uun-iot's ``uun_iot.utils``, on uun-gateway's own parts (durable Storage, drift-free RepeatTimer,
atomic file writes)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..files import atomic_write
from ..module import module_id_from_str
from ..storage import Storage
from ..systemd import journal_line
from ..timers import RepeatTimer
from ..timestamps import parse_iso

canonical_id_from_str = module_id_from_str


def module_id(module: object) -> str:
    """The id of a module class or instance: its ``id`` attribute when it is a string, else its
    class name with the first letter lowercased."""
    mid = getattr(module, "id", None)
    if isinstance(mid, str) and mid:
        return mid
    cls = module if isinstance(module, type) else type(module)
    return module_id_from_str(cls.__name__)


def class_ids(cls: type[Any]) -> tuple[str, str]:
    """(canonical id from the class name, real id) of a module class."""
    return module_id_from_str(cls.__name__), module_id(cls)


def instance_ids(instance: object) -> tuple[str, str]:
    """(canonical id from the class name, real id) of a module instance."""
    return module_id_from_str(type(instance).__name__), module_id(instance)


def file_save(path: str | os.PathLike[str], data: Any) -> bool:
    """Save ``data`` as JSON at ``path`` unless the file already holds the same; True when written.
    The write is atomic (the old or the new file, never a mix). Raises :class:`OSError`."""
    try:
        with open(path, encoding="utf-8") as f:
            if json.load(f) == json.loads(json.dumps(data)):
                return False
    except (OSError, ValueError):
        pass
    atomic_write(path, json.dumps(data))
    return True


def get_iso_timestamp(dt: datetime) -> str:
    """``dt`` as ``2026-12-01T12:00:00.250Z``; an aware datetime is converted to UTC, a naive one is
    written as it is (as uun-iot does)."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def get_datetime_from_iso_timestamp(iso_timestamp: str) -> datetime:
    """Parse an ISO 8601 timestamp, or the HTTP date form (``Tue, 01 Dec 2026 12:00:00 GMT``) that
    uun-iot's function of this name parsed. Raises :class:`ValueError` naming the text."""
    try:
        return parse_iso(iso_timestamp)
    except ValueError:
        try:
            return datetime.strptime(iso_timestamp, "%a, %d %b %Y %H:%M:%S %Z")
        except (TypeError, ValueError):
            raise ValueError(f"not an ISO 8601 or HTTP timestamp: {iso_timestamp!r}") from None


def get_dict_path(dic: Mapping[str, Any], key: str, must_exist: bool = True) -> Any:
    """``dic["a"]["b"]`` for ``key="a/b"``; a missing part raises :class:`KeyError` naming the path,
    or returns None when ``must_exist`` is False."""
    return _get_dict_path(dic, [key], must_exist)


def _get_dict_path(dic: Any, key_pieces: Sequence[str | None], must_exist: bool) -> Any:
    walked: list[str] = []
    for piece in key_pieces:
        for part in (piece or "").split("/"):
            if not part:
                continue
            walked.append(part)
            if not isinstance(dic, Mapping) or part not in dic:
                if must_exist:
                    raise KeyError(f"key `{'/'.join(walked)}` is not present in configuration")
                return None
            dic = dic[part]
    return dic


class LoggingSystemdHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing journal lines (``<N>`` priority prefix, one line per record),
    whatever formatter the application sets, as uun-iot's does."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def format(self, record: logging.LogRecord) -> str:
        return journal_line(record.levelno, super().format(record))


__all__ = [
    "LoggingSystemdHandler",
    "RepeatTimer",
    "Storage",
    "canonical_id_from_str",
    "class_ids",
    "file_save",
    "get_datetime_from_iso_timestamp",
    "get_dict_path",
    "get_iso_timestamp",
    "instance_ids",
    "module_id",
    "module_id_from_str",
]
