"""The transport a configuration asks for: HTTP (httpx) for an ingest API, a producer for
Kafka. Built once per client, relay or ``send()``; imported modules are imported now, on the
caller's thread, never by a first send on a worker thread (where a fork could catch an
import lock held for ever)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._errors import ConfigError
from ._transport import HttpxTransport, Transport
from .destinations.kafka import Kafka

if TYPE_CHECKING:
    from ._config import Config
    from ._kafka import KafkaTransport

__all__ = ["transport_factory"]


def transport_factory(config: Config) -> Callable[[], Transport]:
    """A function that makes a new transport to ``config``'s destination; ``ConfigError``
    now for what would make every send fail (confluent-kafka missing, a bad setting)."""
    destination = config.destination
    if isinstance(destination, Kafka):
        kafka = kafka_transport(destination, config.timeout)
        kafka_destination = destination

        def make_kafka() -> Transport:
            return kafka(
                config.ingest_url,
                kafka_destination,
                timeout=config.timeout,
                connect_timeout=config.connect_timeout,
            )

        return make_kafka

    def make_http() -> Transport:
        return HttpxTransport(
            config.ingest_url,
            config.api_key,
            timeout=config.timeout,
            connect_timeout=config.connect_timeout,
            envelope=destination.envelope,
            gzip=config.gzip,
            content_type=destination.content_type,
            auth=destination.headers(config.api_key),
            session=destination.session(config.base_url),
        )

    return make_http


def kafka_transport(destination: Kafka, timeout: float) -> type[KafkaTransport]:
    """The Kafka transport class, its settings checked by librdkafka."""
    try:
        from ._kafka import KafkaTransport
    except ImportError:
        raise ConfigError(
            "the kafka destination needs confluent-kafka: pip install 'meterline[kafka]'"
        ) from None
    check_settings(destination, timeout)
    return KafkaTransport


def check_settings(destination: Kafka, timeout: float) -> None:
    """Let librdkafka check the settings now, with the timeout they will run with (a
    producer with no broker does no I/O), so that a bad one is a ``ConfigError`` at
    ``Client()`` rather than a log line later."""
    from confluent_kafka import KafkaException, Producer

    settings = {**destination.settings(), "bootstrap.servers": "", "log_level": 0}
    settings["message.timeout.ms"] = max(1, int(timeout * 1000))
    settings.pop("debug", None)  # its lines would go to stderr, not to logging
    try:
        probe = Producer(settings)
    except (KafkaException, TypeError, ValueError) as exc:
        text = str(exc)
        for secret in destination.secrets():
            text = text.replace(secret, "***")
        raise ConfigError(f"producer_config refused by librdkafka: {text}") from None
    probe.flush(0)
    del probe
