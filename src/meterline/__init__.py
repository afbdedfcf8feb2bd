"""meterline: report billable usage without slowing requests, losing or double-counting events."""

from ._client import Answer, Client, Receipt, close, configure, flush, report
from ._config import Config
from ._errors import (
    ClientClosedError,
    ConfigError,
    DeliveryError,
    DeliveryTimeoutError,
    EndpointRefusedError,
    EventRejectedError,
    InvalidEventError,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    MeterlineError,
)
from ._lifecycle import install_sigterm_handler
from ._stats import DropReport, FlushResult, ReplayResult, Stats
from ._transport import Response, Transport, TransportError
from ._version import __version__

__all__ = [
    "Answer",
    "Client",
    "ClientClosedError",
    "Config",
    "ConfigError",
    "DeliveryError",
    "DeliveryTimeoutError",
    "DropReport",
    "EndpointRefusedError",
    "EventRejectedError",
    "FlushResult",
    "InvalidEventError",
    "JournalCorruptError",
    "JournalError",
    "JournalFullError",
    "MeterlineError",
    "Receipt",
    "ReplayResult",
    "Response",
    "Stats",
    "Transport",
    "TransportError",
    "__version__",
    "close",
    "configure",
    "flush",
    "install_sigterm_handler",
    "report",
]
