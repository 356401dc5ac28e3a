"""systemd integration: journald log priorities, sd_notify (READY, STATUS, STOPPING) and the
progress-gated watchdog."""

from __future__ import annotations

import logging

#: syslog priorities by logging level, as sd-daemon(3) reads them from a line's ``<N>`` prefix.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """Formats a record as one journal line: ``<N>logger: message``, a traceback folded into the same
    line (newlines escaped) so journald keeps it as one entry with the record's priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _PRIORITIES if record.levelno >= level), 7)
        return f"<{priority}>" + super().format(record).replace("\n", "\\n")
