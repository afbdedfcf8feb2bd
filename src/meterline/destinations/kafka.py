"""Kafka as a destination: each event's exact bytes as one message of a topic.

``Client(destination="kafka", base_url="kafka://broker1:9092,broker2:9092/usage")``
produces each event with an idempotent producer (``enable.idempotence``, ``acks=all``): the
value is the event's exact bytes in the wire format of a downstream destination (Orb's by
default, ``Kafka(downstream="lago")`` for another), the message key is the customer (so a
customer's events stay in order on one partition), and the headers carry the idempotency key
and the format's name. ``meterline relay`` ships such a topic to that downstream destination.

This module knows the format and how to read the producer's delivery reports; producing is
the Kafka transport's job (``meterline._kafka``), which hands its reports over as a
``Response``: status 200 and no body when every message was acknowledged, else status 207
and ``{"failed": [[index, error_name, retriable, reason], ...]}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from meterline._errors import ConfigError
from meterline._event import Pending
from meterline._response import Response

from ._base import ACCEPTED, REFUSED, RETRY, Answer, Destination, Session
from ._kafka_url import TOPIC, KafkaURL, parse_kafka_url, secret_setting

__all__ = [
    "FORMAT_HEADER",
    "KEY_HEADER",
    "Kafka",
    "KafkaURL",
    "parse_kafka_url",
    "secret_setting",
]

DEFAULT_BASE_URL: Final = "kafka://127.0.0.1:9092"
DEFAULT_TOPIC: Final = "meterline-usage"
KEY_HEADER: Final = "meterline-idempotency-key"
FORMAT_HEADER: Final = "meterline-format"

# Errors that belong to one message and that no retry fixes: it is rejected, with the reason.
_MESSAGE_ERRORS: Final = frozenset(
    {"MSG_SIZE_TOO_LARGE", "INVALID_MSG_SIZE", "INVALID_MSG", "INVALID_RECORD"}
)
# Errors that mean this producer may not write to this topic at all: everything is kept (the
# journal), said loudly, and probed slowly, as for an HTTP 401/403/404.
_REFUSALS: Final = frozenset(
    {
        "TOPIC_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        "SASL_AUTHENTICATION_FAILED",
        "_AUTHENTICATION",
        "UNKNOWN_TOPIC_OR_PART",
        "_UNKNOWN_TOPIC",
        "_UNKNOWN_PARTITION",
        "TOPIC_EXCEPTION",
        "INVALID_TOPIC_EXCEPTION",
    }
)

# Producer settings that meterline's guarantees rest on: a configuration may not change them.
_FIXED: Final[dict[str, str | int | float | bool]] = {"enable.idempotence": True, "acks": "all"}
_OWNED: Final = frozenset(
    {
        "bootstrap.servers",
        "metadata.broker.list",
        "enable.idempotence",
        "acks",
        "request.required.acks",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "transactional.id",
        "on_delivery",
        "delivery.report.only.error",
    }
)
_ORB_KEY: Final = b'{"idempotency_key":"'


class Kafka:
    """Produce events to a Kafka topic in a downstream destination's wire format.

    ``downstream`` names the format (and the rules ``report()`` enforces): the destination
    ``meterline relay --to`` will ship the topic to. ``topic`` (else the base URL's path,
    else ``meterline-usage``). ``producer_config`` passes librdkafka settings (security,
    compression, linger); the ones meterline's guarantees rest on (idempotence, ``acks``,
    timeouts, the brokers) are its own and refused there. Values of settings whose names
    hold ``password``, ``secret``, ``token`` or ``key`` never appear in a repr or a log.
    """

    name: Final = "kafka"
    default_base_url: Final = DEFAULT_BASE_URL
    # One "request" is a burst of messages whose delivery reports are awaited together;
    # librdkafka batches on the wire itself.
    max_batch_events: Final = 1000
    content_type: Final = "application/json"
    url_schemes: Final = ("kafka",)
    needs_api_key: Final = False

    def __init__(
        self,
        *,
        downstream: str | Destination = "orb",
        topic: str | None = None,
        producer_config: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        from . import resolve  # the table of built-ins imports this module

        target = resolve(downstream)
        if isinstance(target, Kafka):
            raise ConfigError("a Kafka destination's downstream must be an HTTP destination")
        self.downstream: Destination = target
        if topic is not None and (not isinstance(topic, str) or not TOPIC.fullmatch(topic)):
            raise ConfigError(f"topic must be a Kafka topic name ([A-Za-z0-9._-]), got {topic!r}")
        self.topic = topic
        settings = dict(producer_config or {})
        for name, value in settings.items():
            if not isinstance(name, str) or not isinstance(value, (str, int, float, bool)):
                raise ConfigError("producer_config must map setting names to str/int/float/bool")
            if name in _OWNED:
                raise ConfigError(
                    f"producer_config may not set {name!r}: meterline sets it "
                    "(brokers come from base_url, timeouts from timeout=)"
                )
        self.producer_config: dict[str, str | int | float | bool] = settings
        self._orb_prefix: bytes | None = None
        if type(target).__name__ == "Orb" and target.name == "orb":
            field = getattr(target, "customer_field", "external_customer_id")
            self._orb_prefix = f',"{field}":"'.encode()
        window = getattr(target, "max_event_age", None)
        if isinstance(window, (int, float)):
            self.max_event_age = float(window)

    def __repr__(self) -> str:
        shown = {k: ("***" if secret_setting(k) else v) for k, v in self.producer_config.items()}
        return (
            f"Kafka(downstream={self.downstream!r}, topic={self.topic!r}, "
            f"producer_config={shown!r})"
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Kafka)
            and other.downstream == self.downstream
            and other.topic == self.topic
            and other.producer_config == self.producer_config
        )

    def __hash__(self) -> int:
        return hash((Kafka, self.downstream.name, self.topic))

    # -- what the format decides -----------------------------------------------------------

    @property
    def key_field(self) -> str:
        return self.downstream.key_field

    @property
    def has_rules(self) -> bool:
        return self.downstream.has_rules

    def check(self, event: Pending) -> None:
        self.downstream.check(event)

    def serialize_many(self, events: Sequence[Pending]) -> list[bytes]:
        return self.downstream.serialize_many(events)

    def envelope(self, events: Sequence[bytes]) -> bytes:
        """Not sent (each event is its own message); the downstream's, for inspection."""
        return self.downstream.envelope(events)

    # -- where and how ---------------------------------------------------------------------

    def ingest_url(self, base_url: str) -> str:
        """``kafka://brokers/topic``: the topic from the base URL's path unless ``topic``."""
        parsed = parse_kafka_url(base_url)
        topic = self.topic or parsed.topic or DEFAULT_TOPIC
        return f"kafka://{parsed.bootstrap}/{topic}"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {}

    def session(self, base_url: str) -> Session | None:
        return None

    def settings(self) -> dict[str, str | int | float | bool]:
        """The producer settings besides the brokers and the timeouts, guarantees fixed."""
        return {**self.producer_config, **_FIXED}

    def secrets(self) -> list[str]:
        """The values of secret-looking settings, to scrub from any text meterline shows."""
        return [str(v) for k, v in self.producer_config.items() if secret_setting(k) and str(v)]

    def route(self, body: bytes) -> tuple[str, str | None]:
        """(idempotency key, customer) of an event's bytes: the message's header and key."""
        fast = self._orb_prefix
        if fast is not None and body.startswith(_ORB_KEY):
            # Orb's bytes as ``Orb.serialize_many`` lays them out: read the two strings in
            # place unless one holds an escape (then parse the whole event).
            end = body.find(b'"', 20)
            rest = end + 1 + len(fast)
            if body.startswith(fast, end + 1):
                stop = body.find(b'"', rest)
                key, customer = body[20:end], body[rest:stop]
                if b"\\" not in key and b"\\" not in customer:
                    return key.decode(), customer.decode()
        doc: Any = orjson.loads(body)
        key = doc.get(self.key_field)
        return (key if isinstance(key, str) else ""), _customer(self.downstream, doc)

    def read(self, response: Response, keys: Sequence[str]) -> Answer:
        if response.status == 200 and not response.body:
            return Answer(ACCEPTED)
        doc = response.json()
        failed = doc.get("failed") if isinstance(doc, dict) else None
        if not isinstance(failed, list) or not failed:
            # Not what the transport writes: nothing in this batch counts as delivered.
            return Answer(RETRY, detail=f"kafka: unreadable delivery report ({response.status})")
        rejected: dict[str, list[str]] = {}
        retry: set[str] = set()
        refused: list[str] = []
        details: list[str] = []
        for entry in failed:
            if not (isinstance(entry, list) and len(entry) == 4 and type(entry[0]) is int):
                return Answer(RETRY, detail="kafka: unreadable delivery report")
            index, name, retriable, reason = entry
            if not 0 <= index < len(keys):
                return Answer(RETRY, detail="kafka: unreadable delivery report")
            key = keys[index]
            if name in _MESSAGE_ERRORS and not retriable:
                rejected[key] = [f"kafka {name}: {reason}"]
                continue
            retry.add(key)
            details.append(f"{name}: {reason}")
            if name in _REFUSALS:
                refused.append(key)
        detail = "kafka " + details[0] if details else ""
        if refused and len(retry) == len(keys):
            return Answer(REFUSED, detail=detail)
        return Answer(ACCEPTED, rejected=rejected, retry=frozenset(retry), detail=detail)


def _customer(downstream: Destination, doc: Any) -> str | None:
    """Where each built-in format keeps the customer (a custom format: no message key,
    so librdkafka's partitioner spreads the events)."""
    name = downstream.name
    field = {
        "orb": getattr(downstream, "customer_field", "external_customer_id"),
        "metronome": "customer_id",
        "lago": "external_subscription_id",
        "openmeter": "subject",
    }.get(name)
    if name == "stripe":
        payload = doc.get("payload")
        field_name = getattr(downstream, "customer_payload_key", "stripe_customer_id")
        value = payload.get(field_name) if isinstance(payload, dict) else None
    else:
        value = doc.get(field) if field else None
    return value if isinstance(value, str) else None
