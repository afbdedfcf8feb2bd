"""The exceptions meterline raises.

::

    MeterlineError
     ├── InvalidEventError (also ValueError)   a caller bug in report(): raised at once
     ├── ConfigError (also ValueError)         a bad option or an unsafe journal dir
     ├── ClientClosedError (also RuntimeError) report() after close()
     ├── DeliveryError                         only from explicit synchronous calls (send())
     │    ├── EventRejectedError               the server named the event invalid: ``reasons``
     │    ├── DeliveryTimeoutError (TimeoutError) the budget was spent on transient failures
     │    └── EndpointRefusedError             401/403/404, or an answer not the vendor's
     └── JournalError (also OSError)           only from explicit synchronous calls
          ├── JournalFullError                 journal_max_bytes or the free-space reserve reached
          ├── JournalCorruptError              a batch file failed its checks (moved to quarantine/)
          └── JournalForeignError              a batch written for another endpoint or credential

``report()`` raises only the first three; delivery and journal problems never reach it.
A ``DeliveryError`` names the event (``idempotency_key``), the HTTP ``status`` when there was
one and the number of ``attempts``; its message never holds the API key or a session token.
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "ConfigError",
    "DeliveryError",
    "DeliveryTimeoutError",
    "EndpointRefusedError",
    "EventRejectedError",
    "InvalidEventError",
    "JournalCorruptError",
    "JournalError",
    "JournalForeignError",
    "JournalFullError",
    "MeterlineError",
]


class MeterlineError(Exception):
    """Base class of every exception meterline raises."""


class InvalidEventError(MeterlineError, ValueError):
    """An event given to ``report()`` breaks a rule; ``field`` and ``rule`` say which."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")

    def __reduce__(self) -> tuple[object, ...]:  # picklable: a process pool sends it back
        return (type(self), (self.field, self.rule))


class ConfigError(MeterlineError, ValueError):
    """An option is unknown or invalid, or the journal directory is unsafe."""


class ClientClosedError(MeterlineError, RuntimeError):
    """``report()`` was called after ``close()``."""


class DeliveryError(MeterlineError):
    """An explicit synchronous send (``send()``, a replay from the CLI) failed. Nothing was
    journaled for it: the caller decides what to do with the event."""

    def __init__(
        self,
        message: str,
        *,
        idempotency_key: str | None = None,
        status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key
        self.status = status
        self.attempts = attempts

    def __reduce__(self) -> tuple[object, ...]:  # keyword-only fields: pickle them as state
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


class EventRejectedError(DeliveryError):
    """The server named the event invalid; ``reasons`` holds what it said (sending it again
    unchanged will not help)."""

    def __init__(
        self,
        message: str,
        *,
        reasons: list[str] | None = None,
        idempotency_key: str | None = None,
        status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, idempotency_key=idempotency_key, status=status, attempts=attempts)
        self.reasons = list(reasons or [])


class DeliveryTimeoutError(DeliveryError, TimeoutError):
    """No confirmation within the budget (``timeout``, else ``retry_deadline``) or the
    attempts: every answer was transient (429, 5xx, no answer), or the client closed. The
    server may still hold the event: send it again with the same idempotency key.
    ``retry_after`` is the server's last ``Retry-After`` in seconds, when it gave one."""

    retry_after: float | None = None


class EndpointRefusedError(DeliveryError):
    """The endpoint refused the request (401, 403, 404...) or answered with something that is
    not the vendor's answer (an HTML page from a proxy): a configuration problem."""


class JournalError(MeterlineError, OSError):
    """The journal could not be read or written."""


class JournalFullError(JournalError):
    """The journal reached ``journal_max_bytes`` or the free-space reserve."""


class JournalCorruptError(JournalError):
    """A batch file failed its checks; it was moved to ``quarantine/``."""


class JournalForeignError(JournalError):
    """A batch file was written for another destination, endpoint or credential; it is left
    in place for the client it belongs to and never sent with this one's credential."""


def _rebuild(cls: type[DeliveryError], message: str, state: dict[str, object]) -> DeliveryError:
    """A ``DeliveryError`` subclass from its pickled message and attributes."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error
