"""One frozen configuration object, its defaults, and the only place that reads the environment."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ._checks import check_api_key, positive_float, positive_int
from ._errors import ConfigError
from .destinations import Destination, resolve
from .destinations.kafka import Kafka, parse_kafka_url
from .destinations.orb import Orb

__all__ = ["Config"]

DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_MAX_BATCH_BYTES = 512 * 1024
DEFAULT_MAX_QUEUE_EVENTS = 100_000  # DESIGN said 10,000: too small under the GIL (see README)
DEFAULT_MAX_QUEUE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 32 * 1024
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_RETRY_ATTEMPTS = 4
DEFAULT_RETRY_DEADLINE = 30.0
DEFAULT_RETRY_AFTER_MAX = 60.0
DEFAULT_PROBE_INTERVAL = 5.0
DEFAULT_AUTH_PROBE_INTERVAL = 60.0
DEFAULT_REPLAY_INTERVAL = 30.0
DEFAULT_REPLAY_RATE = 100_000.0
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
DEFAULT_JOURNAL_MAX_BYTES = 1 << 30
DEFAULT_JOURNAL_MAX_AGE = 7 * 86_400.0
DEFAULT_JOURNAL_MIN_FREE_BYTES = 64 << 20

Durability = Literal["spill", "write_ahead"]
CustomerField = Literal["external_customer_id", "customer_id"]
DEFAULT_DESTINATION = "orb"

_ENV_FLOATS = {
    "flush_interval": "METERLINE_FLUSH_INTERVAL",
    "shutdown_timeout": "METERLINE_SHUTDOWN_TIMEOUT",
}


@dataclass(frozen=True)
class Config:
    """Every option of a client; times are seconds as ``float``, sizes are bytes."""

    api_key: str | None = field(default=None, repr=False)
    # A name (``"orb"``, ``"lago"``...) or a configured object; always an object after init.
    destination: Destination = field(default=DEFAULT_DESTINATION)  # type: ignore[assignment]
    base_url: str = ""  # "": the destination's public URL
    journal_dir: Path | None = None
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    # None: the destination's limit (Orb 500; Metronome, Lago, Stripe 100); an int after init
    max_batch_events: int = None  # type: ignore[assignment]
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_queue_events: int = DEFAULT_MAX_QUEUE_EVENTS
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS
    retry_deadline: float = DEFAULT_RETRY_DEADLINE
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    probe_interval: float = DEFAULT_PROBE_INTERVAL
    auth_probe_interval: float = DEFAULT_AUTH_PROBE_INTERVAL
    replay_interval: float = DEFAULT_REPLAY_INTERVAL
    replay_rate: float = DEFAULT_REPLAY_RATE
    customer_field: CustomerField | None = None  # Orb only: Orb(customer_field=...) too
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    journal_max_bytes: int = DEFAULT_JOURNAL_MAX_BYTES
    journal_max_age: float = DEFAULT_JOURNAL_MAX_AGE
    journal_min_free_bytes: int = DEFAULT_JOURNAL_MIN_FREE_BYTES
    durability: Durability = "spill"
    gzip: bool = False
    can_fail_open: bool = True  # can() without an answer: allow (True) or refuse (False)

    def __post_init__(self) -> None:
        check_api_key(self.api_key)
        destination = resolve(self.destination)
        if self.customer_field is not None:
            if not isinstance(destination, Orb):
                raise ConfigError(
                    f"customer_field is an option of the orb destination, not {destination.name}"
                )
            if self.customer_field != destination.customer_field:
                destination = Orb(customer_field=self.customer_field)
        if isinstance(destination, Orb):
            object.__setattr__(self, "customer_field", destination.customer_field)
        object.__setattr__(self, "destination", destination)
        if not self.base_url:
            object.__setattr__(self, "base_url", destination.default_base_url)
        given: int | None = self.max_batch_events
        if given is None:
            object.__setattr__(self, "max_batch_events", destination.max_batch_events)
        kafka = isinstance(destination, Kafka)
        _check_url("base_url", self.base_url, kafka=kafka)
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        try:  # a custom destination's bug is found here, not on a meterline thread
            ingest = destination.ingest_url(self.base_url)
        except Exception as exc:  # noqa: BLE001 - reported as the configuration error it is
            raise ConfigError(
                f"the {destination.name} destination's ingest_url() raised {type(exc).__name__}"
            ) from None
        _check_url(f"the {destination.name} ingest URL", ingest, kafka=kafka)
        if self.journal_dir is not None:
            # Absolute now: a later chdir() must not move the journal (or strand its files).
            object.__setattr__(self, "journal_dir", Path(os.path.abspath(self.journal_dir)))
        for name in (
            "flush_interval",
            "timeout",
            "connect_timeout",
            "retry_deadline",
            "probe_interval",
            "auth_probe_interval",
            "replay_interval",
            "replay_rate",
            "journal_max_age",
        ):
            positive_float(self, name)
        for name in ("retry_after_max", "shutdown_timeout"):
            positive_float(self, name, allow_zero=True)
        for name in (
            "max_batch_events",
            "max_batch_bytes",
            "max_queue_events",
            "max_queue_bytes",
            "max_event_bytes",
            "retry_attempts",
            "journal_max_bytes",
        ):
            positive_int(self, name)
        positive_int(self, "journal_min_free_bytes", allow_zero=True)
        window = getattr(destination, "max_event_age", None)
        if isinstance(window, (int, float)) and self.journal_max_age > window:
            raise ConfigError(
                f"journal_max_age must be at most {window / 86_400:g} days for "
                f"{destination.name}, which refuses older events (got "
                f"{self.journal_max_age / 86_400:g} days): a batch kept longer could not be "
                "delivered"
            )
        if self.max_batch_events > destination.max_batch_events:
            raise ConfigError(
                f"max_batch_events must be at most {destination.max_batch_events}, "
                f"{destination.name}'s limit per request; got {self.max_batch_events}"
            )
        if self.durability not in ("spill", "write_ahead"):
            raise ConfigError(
                f"durability must be 'spill' or 'write_ahead', got {self.durability!r}"
            )
        if not isinstance(self.gzip, bool):
            raise ConfigError("gzip must be True or False")
        if not isinstance(self.can_fail_open, bool):
            raise ConfigError("can_fail_open must be True or False")
        if self.max_event_bytes + 64 > self.max_batch_bytes:
            raise ConfigError("max_batch_bytes must leave room for one event of max_event_bytes")
        if self.max_batch_events > self.max_queue_events:
            raise ConfigError("max_queue_events must be at least max_batch_events")
        if self.max_batch_bytes > self.max_queue_bytes:
            raise ConfigError("max_queue_bytes must be at least max_batch_bytes")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
        )
        return f"Config(api_key={'***' if self.api_key else None}, {shown})"

    @property
    def ingest_url(self) -> str:
        """Where batches are POSTed (Orb: ``{base_url}/ingest``)."""
        return self.destination.ingest_url(self.base_url)

    @property
    def journal_fingerprint(self) -> bytes:
        """16 bytes naming what a journal file may be replayed to: destination, ingest URL
        and credential, hashed one way. Written in every batch header; a replayer sends only
        files whose fingerprint is its own, so no batch is ever billed to another account."""
        parts = ["meterline-journal-v1", self.destination.name, self.ingest_url]
        if isinstance(self.destination, Kafka):  # the bytes are in the downstream's format
            parts.append(f"format={self.destination.downstream.name}")
        material = "\0".join(parts)
        key = (self.api_key or "").encode()
        return hashlib.sha256(material.encode() + b"\0" + key).digest()[:16]

    def resolved_journal_dir(self) -> Path:
        """The journal directory: as given, else a per-user state folder per destination,
        endpoint and credential (its name holds a short one-way fingerprint of the key)."""
        if self.journal_dir is not None:
            return self.journal_dir
        return default_state_dir() / journal_slug(
            self.destination.name, self.base_url, self.api_key
        )

    @classmethod
    def from_env(
        cls,
        api_key: str | None = None,
        base_url: str | None = None,
        journal_dir: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        destination: str | Destination | None = None,
        **options: Any,
    ) -> Config:
        """Build a config from arguments, falling back to ``METERLINE_*`` variables."""
        return cls._from_env(api_key, base_url, journal_dir, environ, destination, options)

    @classmethod
    def _from_env(
        cls,
        api_key: str | None,
        base_url: str | None,
        journal_dir: str | os.PathLike[str] | None,
        environ: Mapping[str, str] | None,
        destination: str | Destination | None,
        options: dict[str, Any],
    ) -> Config:
        env = os.environ if environ is None else environ
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(_OPTION_NAMES))}"
            )
        kwargs: dict[str, Any] = dict(options)
        kwargs["api_key"] = api_key if api_key is not None else env.get("METERLINE_API_KEY") or None
        kwargs["destination"] = (
            destination
            if destination is not None
            else env.get("METERLINE_DESTINATION", "").strip() or DEFAULT_DESTINATION
        )
        kwargs["base_url"] = base_url or env.get("METERLINE_BASE_URL") or ""
        jd = journal_dir if journal_dir is not None else env.get("METERLINE_JOURNAL_DIR") or None
        kwargs["journal_dir"] = Path(jd) if jd is not None else None
        for name, var in _ENV_FLOATS.items():
            if name not in kwargs and env.get(var):
                try:
                    kwargs[name] = float(env[var])
                except ValueError:
                    raise ConfigError(f"{var} must be a number, got {env[var]!r}") from None
        if "durability" not in kwargs and env.get("METERLINE_DURABILITY"):
            kwargs["durability"] = env["METERLINE_DURABILITY"]
        return cls(**kwargs)


_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(Config)) - {
    "api_key",
    "destination",
    "base_url",
    "journal_dir",
}


def _check_url(what: str, url: object, *, kafka: bool = False) -> None:
    """An http(s) URL with a host and nothing that would send another credential (for
    Kafka, ``kafka://host:port[,...]/topic``)."""
    if kafka:
        parse_kafka_url(url, what=what)
        return
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = url if isinstance(url, str) and "@" not in url else type(url).__name__
        raise ConfigError(f"{what} must be an http(s) URL with a host, got {shown!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{what} must not carry a query, a fragment or credentials")


def default_state_dir() -> Path:
    """The per-user state directory: ``$XDG_STATE_HOME/meterline`` or its platform default."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "meterline"
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "meterline"


def journal_slug(destination: str, base_url: str, api_key: str | None) -> str:
    """The default journal folder's name: destination, endpoint and a key fingerprint."""
    credential = hashlib.sha256(b"meterline-credential\0" + (api_key or "").encode())
    return f"{destination}-{endpoint_slug(base_url)}-{credential.hexdigest()[:12]}"


def endpoint_slug(base_url: str) -> str:
    """A folder name per endpoint: readable host and port plus a short hash of the whole URL."""
    parts = urlsplit(base_url)
    try:
        host = (parts.hostname or "endpoint").replace(":", "_")
        port = f"-{parts.port}" if parts.port else ""
    except ValueError:  # kafka://a:9092,b:9092 has no single port
        host, port = "kafka", ""
    digest = hashlib.sha256(base_url.encode()).hexdigest()[:10]
    return f"{host}{port}-{digest}"
