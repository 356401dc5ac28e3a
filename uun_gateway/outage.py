"""What every network-facing module shares: backoff, deadlines, one log line per state change,
describing a failure, and text from outside made safe to log.

Built-in modules use these, and user modules get the same manners for free::

    from uun_gateway import Backoff, StateLog, describe_failure

    class Poller(Module):
        def __init__(self, config=None, uuclient=None):
            super().__init__(config, uuclient)
            self.backoff = Backoff(initial=2, maximum=300)
            self.link = StateLog(self.logger, "server")

        @on("tick")
        def poll(self):
            if not self.backoff.ready():
                return
            try:
                fetch()
            except OSError as exc:
                self.backoff.failed()
                self.link.failed(f"unreachable: {describe_failure(exc)}")
            else:
                self.backoff.succeeded()
                self.link.ok("reachable again")
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]

DEFAULT_REPEAT_EVERY = 300.0
MAX_LOGGED_TEXT = 200


class Backoff:
    """Capped exponential backoff on a monotonic clock.

    After the n-th failure in a row the next attempt is due ``initial * factor**(n-1)`` seconds
    later, at most ``maximum``. :meth:`succeeded` makes the next attempt due at once. Thread-safe;
    never blocks. ``clock`` is injectable for tests.
    """

    def __init__(
        self, initial: float = 1.0, maximum: float = 300.0, factor: float = 2.0, *, clock: Clock = time.monotonic
    ) -> None:
        if not (initial > 0 and maximum >= initial and factor >= 1):
            raise ValueError(
                f"Backoff needs 0 < initial <= maximum and factor >= 1, got {initial}, {maximum}, {factor}"
            )
        self.initial = float(initial)
        self.maximum = float(maximum)
        self.factor = float(factor)
        self._clock = clock
        self._lock = threading.Lock()
        self.failures = 0
        self.next_attempt = 0.0

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row (0 for none)."""
        if failures <= 0:
            return 0.0
        return float(min(self.maximum, self.initial * self.factor ** min(failures - 1, 1000)))

    def failed(self) -> float:
        """Count a failure; return the seconds until the next attempt is due."""
        with self._lock:
            self.failures += 1
            wait = self.delay(self.failures)
            self.next_attempt = self._clock() + wait
            return wait

    def succeeded(self) -> None:
        """Forget the failures: the next attempt is due at once."""
        with self._lock:
            self.failures = 0
            self.next_attempt = 0.0

    def remaining(self) -> float:
        """Seconds until the next attempt is due (0 when it is due now)."""
        return max(0.0, self.next_attempt - self._clock())

    def ready(self) -> bool:
        """Whether the next attempt is due."""
        return self.remaining() == 0.0


class Deadline:
    """A point in monotonic time: ``Deadline(5)`` expires five seconds from now.

    Pass it down a chain of calls so that the whole chain, not each step, is bounded.
    """

    def __init__(self, seconds: float, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.at = clock() + max(0.0, float(seconds))

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - self._clock())

    def expired(self) -> bool:
        return self.remaining() == 0.0

    def check(self, what: str) -> float:
        """The seconds left; raises :class:`TimeoutError` naming ``what`` when none are."""
        left = self.remaining()
        if left == 0.0:
            raise TimeoutError(f"{what}: deadline exceeded")
        return left


class StateLog:
    """Logs a link's or a job's state once per change, not once per attempt.

    ``failed(problem)`` logs the first failure (and a failure whose ``state`` differs from the
    current one); while it keeps failing, at most one summary line every ``repeat_every`` seconds
    gives the count and the last problem. ``ok(message)`` logs once when the failing state ends.
    Every text is passed through :func:`safe_text`. Thread-safe; never blocks on I/O but the log's.
    """

    def __init__(
        self,
        logger: logging.Logger,
        subject: str,
        *,
        repeat_every: float = DEFAULT_REPEAT_EVERY,
        clock: Clock = time.monotonic,
    ) -> None:
        self.logger = logger
        self.subject = subject
        self.repeat_every = repeat_every
        self._clock = clock
        self._lock = threading.Lock()
        self.state: str | None = None
        self.count = 0
        self.last_problem: str | None = None
        self._summarised_at = 0.0
        self._since_summary = 0

    @property
    def failing(self) -> bool:
        return self.state not in (None, "ok")

    def failed(
        self, problem: str, *, state: str = "failed", level: int = logging.WARNING, exc_info: Any = None
    ) -> bool:
        """Record a failure; return True when this call logged it as a change of state."""
        problem = safe_text(problem)
        now = self._clock()
        with self._lock:
            changed = self.state != state
            self.last_problem = problem
            if changed:
                self.state, self.count, self._since_summary, self._summarised_at = state, 1, 0, now
            else:
                self.count += 1
                self._since_summary += 1
                if now - self._summarised_at < self.repeat_every:
                    return False
                repeats, self._since_summary, self._summarised_at = self._since_summary, 0, now
        if changed:
            self.logger.log(level, "%s: %s", self.subject, problem, exc_info=exc_info)
        else:
            self.logger.log(
                level,
                "%s: still failing (%d more time(s), %d in all); last: %s",
                self.subject,
                repeats,
                self.count,
                problem,
            )
        return changed

    def ok(self, message: str = "works again", *, level: int = logging.INFO, first: str | None = None) -> bool:
        """Record a success; return True when it ended a failing state (and was logged).

        ``first``, when given, is logged at ``level`` the very first time the state becomes ok.
        """
        with self._lock:
            previous, count = self.state, self.count
            self.state, self.count, self.last_problem = "ok", 0, None
        if previous == "ok":
            return False
        if previous is None:
            if first is not None:
                self.logger.log(level, "%s: %s", self.subject, safe_text(first))
            return False
        self.logger.log(level, "%s: %s after %d failure(s)", self.subject, safe_text(message), count)
        return True


def safe_text(text: object, limit: int = MAX_LOGGED_TEXT) -> str:
    """``text`` fit for one log line: control characters escaped, at most ``limit`` characters.

    Use it on anything that came from outside (server answers, device values, keys in an error
    map) before logging it, so a newline cannot forge a log line and a huge value cannot flood
    the journal.
    """
    s = str(text)
    if not s.isprintable():
        s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    if len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return s


def describe_failure(exc: BaseException | None) -> str:
    """A short, human description of a network failure: ``timed out``, ``connection refused``,
    ``HTTP 503``, ``TLS certificate verify failed`` … Never contains secrets or request bodies."""
    if exc is None:
        return "no answer"
    try:
        import requests
    except ImportError:  # pragma: no cover - requests is a dependency
        requests = None  # type: ignore[assignment]
    if requests is not None and isinstance(exc, requests.RequestException):
        response = getattr(exc, "response", None)
        if isinstance(exc, requests.HTTPError) and response is not None:
            return f"HTTP {response.status_code}"
        if isinstance(exc, requests.exceptions.SSLError):
            return "TLS failed" + _cause_suffix(exc)
        if isinstance(exc, requests.Timeout):
            return "timed out"
        if isinstance(exc, requests.ConnectionError):
            cause = _root_os_error(exc)
            return describe_failure(cause) if cause is not None else "connection failed"
        return safe_text(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, TimeoutError):
        return "timed out" if not str(exc) else safe_text(f"timed out ({exc})")
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the peer"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by the peer"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, OSError) and exc.strerror:
        return safe_text(exc.strerror[:1].lower() + exc.strerror[1:])
    return safe_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _root_os_error(exc: BaseException) -> OSError | None:
    """The innermost OSError under a requests/urllib3 wrapper, if any (refused, reset, not found)."""
    seen: set[int] = set()
    found: OSError | None = None
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, OSError) and type(node).__module__ in ("builtins", "socket"):
            found = node
        reason = getattr(node, "reason", None)
        node = reason if isinstance(reason, BaseException) else (node.__cause__ or node.__context__)
        if node is None and exc.args and isinstance(exc.args[0], BaseException) and exc.args[0] is not exc:
            node = exc.args[0] if id(exc.args[0]) not in seen else None
    return found


def _cause_suffix(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("certificate verify failed", "wrong version number", "handshake failure", "unknown ca"):
        if marker in text.lower():
            return f": {marker}"
    return ""
