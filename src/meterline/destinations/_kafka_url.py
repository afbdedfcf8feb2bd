"""The parts of the Kafka destination that are plain rules: its URL, topic names, and which
librdkafka settings hold secrets."""

from __future__ import annotations

import re

from meterline._errors import ConfigError

__all__ = ["TOPIC", "KafkaURL", "parse_kafka_url", "secret_setting"]

# Kafka's own rule for topic names.
TOPIC = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,249}")  # not "." or ".."
_BROKER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})")

_SECRET_WORDS = ("password", "secret", "token", "key", "credential", "jaas")


class KafkaURL:
    """``kafka://host:port[,host:port...][/topic]`` taken apart."""

    __slots__ = ("brokers", "topic")

    def __init__(self, brokers: tuple[str, ...], topic: str | None) -> None:
        self.brokers = brokers
        self.topic = topic

    @property
    def bootstrap(self) -> str:
        return ",".join(self.brokers)


def parse_kafka_url(url: object, *, what: str = "base_url") -> KafkaURL:
    """The brokers and the topic of a ``kafka://`` URL; ``ConfigError`` naming what is wrong."""
    if not isinstance(url, str) or not url.startswith("kafka://"):
        shown = url if isinstance(url, str) and "@" not in url else type(url).__name__
        raise ConfigError(
            f"{what} must be a kafka://host:port[,host:port]/topic URL, got {shown!r}"
        )
    rest = url[len("kafka://") :]
    if "@" in rest or "?" in rest or "#" in rest:
        raise ConfigError(
            f"{what} must not carry credentials, a query or a fragment "
            "(give SASL settings in Kafka(producer_config=...))"
        )
    netloc, _, path = rest.partition("/")
    brokers = tuple(b.strip() for b in netloc.split(",") if b.strip())
    if not brokers:
        raise ConfigError(f"{what} names no broker: {url!r}")
    for broker in brokers:
        match = _BROKER.fullmatch(broker)
        if match is None or not 0 < int(match.group(3)) < 65536:
            raise ConfigError(f"{what}: {broker!r} is not host:port")
    topic = path.strip("/") or None
    if topic is not None and not TOPIC.fullmatch(topic):
        raise ConfigError(f"{what}: {topic!r} is not a Kafka topic name ([A-Za-z0-9._-], ≤ 249)")
    return KafkaURL(brokers, topic)


def secret_setting(name: str) -> bool:
    """Whether a librdkafka setting's value is a secret: every ``sasl.*`` setting but the
    mechanism and the user name (OAuth configs and extensions hold client secrets), and any
    whose name says password, secret, token, key, credential or jaas."""
    low = name.lower()
    if low.startswith("sasl.") and low not in (
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
    ):
        return True
    return any(word in low for word in _SECRET_WORDS)
