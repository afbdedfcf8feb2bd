"""How a batch reaches a Kafka topic: a ``Transport`` over an idempotent producer.

``KafkaTransport.send()`` produces each event of a batch as one message (the exact bytes as
the value, the customer as the key, the idempotency key and the format in headers) and waits
for every message's delivery report, within the request's timeout. It returns the reports
as a ``Response`` for the Kafka destination to read (``destinations.kafka``): a message is
settled on its own report, so a batch can be partly delivered and the rest sent again.

librdkafka retries inside the producer (idempotence keeps those retries from writing twice)
until ``message.timeout.ms``, which is the request's timeout: after it, every message of a
batch has a report. A message whose outcome stayed unknown (a report that came after the
deadline, or none at close) is sent again or journaled; the topic may then hold it twice,
with the same idempotency key, which the billing platform counts once.

Fork: librdkafka's threads do not survive ``fork()``, and destroying a producer in a child
would wait for them for ever; a child therefore never touches its parent's producers (they
are kept, unused, in ``_ORPHANS``) and makes its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from ._response import Response
from ._stats import RateLimitedLog
from ._transport import TransportError
from .destinations.kafka import FORMAT_HEADER, KEY_HEADER, Kafka, parse_kafka_url

__all__ = ["KafkaTransport"]

_LOG = logging.getLogger("meterline.kafka")


class _QuietLog:
    """librdkafka's own log lines into ``meterline.kafka``, each kind at most once a minute
    (a broker that is down makes it log every reconnection attempt, many a second)."""

    def __init__(self) -> None:
        self._limit = RateLimitedLog()

    def log(self, level: int, msg: str, *args: object) -> None:
        try:
            self._log(level, msg, *args)
        except BaseException:  # noqa: BLE001, S110 - never raise into librdkafka
            pass

    def _log(self, level: int, msg: str, *args: object) -> None:
        if not _LOG.isEnabledFor(level):
            return
        text = msg % args if args else msg
        # "FAIL [thrd:...]: 127.0.0.1:9092/bootstrap: Connect ... failed": one kind per
        # facility and broker, so that a new kind of trouble still shows at once.
        kind = text.split("]", 1)[0][:80]
        self._limit.log(level, kind, "meterline.kafka: %s", text)


_GRACE = 1.0  # seconds past message.timeout.ms to wait for the last reports
_POLL = 0.05
_LIVE: list[KafkaTransport] = []  # this process's transports, found again after a fork
_ORPHANS: list[Any] = []  # a parent's producers in a forked child: never destroyed there
_LIVE_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _LIVE_LOCK
    _LIVE_LOCK = threading.Lock()
    for transport in _LIVE:
        transport.orphan()
    _LIVE.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


# Errors after which an idempotent producer writes no more (librdkafka may report them
# without marking them fatal): the next send opens a new producer.
_BROKEN: Final = frozenset(
    {
        "_FATAL",
        "_FENCED",
        "PRODUCER_FENCED",
        "UNKNOWN_PRODUCER_ID",
        "OUT_OF_ORDER_SEQUENCE_NUMBER",
        "INVALID_PRODUCER_EPOCH",
        "INVALID_PRODUCER_ID_MAPPING",
    }
)


def _final(name: str) -> bool:
    """Whether a message's error is its own and final (else: another try may succeed)."""
    return name in ("MSG_SIZE_TOO_LARGE", "INVALID_MSG_SIZE", "INVALID_MSG", "INVALID_RECORD")


class KafkaTransport:
    """Produces batches to ``url``'s topic; each ``send()`` bounded by its timeout."""

    def __init__(
        self,
        url: str,
        destination: Kafka,
        *,
        timeout: float,
        connect_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parsed = parse_kafka_url(url)
        self._topic = parsed.topic or ""
        self._destination = destination
        self._format = destination.downstream.name.encode()
        self._timeout = timeout
        self._settings: dict[str, Any] = {
            "client.id": "meterline",
            "socket.connection.setup.timeout.ms": max(1000, int(connect_timeout * 1000)),
            **destination.settings(),
            "bootstrap.servers": parsed.bootstrap,
            "message.timeout.ms": max(1, int(timeout * 1000)),
            "error_cb": self._on_error,
            "on_delivery": self._on_delivery,
            "delivery.report.only.error": True,
            "logger": _QuietLog(),  # librdkafka's lines, through logging, not stderr
        }
        self._producer: Any = None
        self._broken = ""  # a fatal producer error: the next send makes a new producer
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._failed: dict[str, tuple[str, bool, str]] = {}
        self._failed_unplaced = ""
        self._clock = clock
        self.last_error = ""
        self.secrets = destination.secrets()
        with _LIVE_LOCK:
            _LIVE.append(self)
        try:  # open now: an idempotent producer takes a while to get its producer id
            self._producer_now()
        except TransportError:
            pass  # the first send tries again and reports it

    def __repr__(self) -> str:
        return f"KafkaTransport(topic={self._topic!r}, format={self._format.decode()!r})"

    def _on_error(self, err: KafkaError) -> None:
        # librdkafka's own errors (a broker down, all brokers down, a fatal idempotence
        # error); messages report their own. Kept for the next delivery error's detail.
        try:
            self.last_error = f"{err.name()}: {err.str()}"
            if err.fatal() or err.name() in _BROKEN:
                self._broken = self.last_error
        except BaseException:  # noqa: BLE001 - never raise into librdkafka
            self._broken = self._broken or "an error report could not be read"

    def _producer_now(self) -> Any:
        with self._lock:
            if self._broken and self._producer is not None:
                # An idempotent producer that hit a fatal error produces no more: a new one
                # (its messages were reported failed and are sent again or journaled).
                _ORPHANS.append(self._producer)
                self._producer = None
            self._broken = ""
            if self._producer is None:
                try:
                    self._producer = Producer(self._settings)
                except KafkaException as exc:
                    raise TransportError(f"kafka producer: {exc}") from None
            return self._producer

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        # Only failures are reported (delivery.report.only.error): a message without a
        # report by the end of flush() was acknowledged by the broker. A report carries no
        # headers: the key is read again from the value.
        if err is None:
            return
        try:  # an exception escaping a librdkafka callback would surface somewhere else
            name = err.name()
            if err.fatal() or name in _BROKEN:
                self._broken = f"{name}: {err.str()}"
            try:
                key, _ = self._destination.route(msg.value() or b"")
            except (ValueError, TypeError, AttributeError):
                key = ""
            if key:
                self._failed[key] = (name, not _final(name), err.str())
            else:  # a failure we cannot place: no message of this batch counts as delivered
                self._failed_unplaced = f"{name}: {err.str()}"
        except BaseException:  # noqa: BLE001 - counted as a failure nobody can place
            self._failed_unplaced = "a delivery report could not be read"

    def send(self, events: Sequence[bytes], *, timeout: float | None = None) -> Response:
        with self._send_lock:  # flush() waits for every message: one batch at a time
            return self._send(events, timeout)

    def _send(self, events: Sequence[bytes], timeout: float | None) -> Response:
        producer = self._producer_now()
        limit = self._timeout if timeout is None else min(timeout, self._timeout)
        deadline = self._clock() + max(0.0, limit) + (_GRACE if timeout is None else 0.0)
        self._failed = failed = {}
        self._failed_unplaced = ""
        keys: list[str] = []
        route = self._destination.route
        topic, fmt, produce = self._topic, self._format, producer.produce
        unknown = ""
        try:
            for body in events:
                key, customer = route(body)
                keys.append(key)
                headers = [(KEY_HEADER, key.encode()), (FORMAT_HEADER, fmt)]
                while True:
                    try:
                        produce(topic, body, customer, headers=headers)
                        break
                    except BufferError:  # librdkafka's own queue is full: let it drain
                        if self._clock() >= deadline:
                            failed[key] = ("_QUEUE_FULL", True, "the producer's queue stayed full")
                            break
                        producer.poll(0.01)
                    except KafkaException as exc:
                        name, reason = self._kafka_error(exc)
                        failed[key] = (name, not _final(name), reason)
                        break
            left = producer.flush(max(0.0, deadline - self._clock()))
        except KafkaException as exc:  # a fatal error raised by poll() or flush()
            name, reason = self._kafka_error(exc)
            unknown, left = f"{name}: {reason}", len(events)
        except SystemError as exc:  # confluent-kafka's flush() after a fatal error
            self._broken = unknown = f"the producer failed: {exc}"
            left = len(events)
        if not left and not failed and not self._failed_unplaced:
            return Response(200)
        rows: list[list[object]] = [[i, *failed[k]] for i, k in enumerate(keys) if k in failed]
        if left or self._failed_unplaced or unknown:
            # Reports missing at the deadline (or one that could not be placed): those
            # messages' outcome is unknown and which they are cannot be told apart. All are
            # sent again (the same keys) or journaled: the topic may hold some twice; the
            # platform counts each once.
            why = unknown or self._failed_unplaced or self.last_error
            why = why or "no delivery report within the timeout"
            rows += [
                [i, "_MSG_TIMED_OUT", True, why]
                for i in range(len(events))
                if i >= len(keys) or keys[i] not in failed
            ]
        return Response(207, body=orjson.dumps({"failed": rows}))

    def _kafka_error(self, exc: KafkaException) -> tuple[str, str]:
        err = exc.args[0] if exc.args else None
        if not isinstance(err, KafkaError):
            return "_UNKNOWN", str(exc)
        if err.fatal() or err.name() in _BROKEN:  # this producer writes no more: the next
            self._broken = f"{err.name()}: {err.str()}"  # send makes a new one
        return err.name(), err.str()

    def close(self) -> None:
        with _LIVE_LOCK:
            if self in _LIVE:
                _LIVE.remove(self)
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            # What is still queued was reported failed (journaled or sent again): drop it
            # rather than deliver a second copy after the journal took the first.
            try:
                producer.purge(in_queue=True, in_flight=False)
                producer.flush(1.0)
            except (KafkaException, RuntimeError):
                pass

    def orphan(self) -> None:
        """In a forked child: never use or destroy the parent's producer."""
        if self._producer is not None:
            _ORPHANS.append(self._producer)
        self._producer = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
