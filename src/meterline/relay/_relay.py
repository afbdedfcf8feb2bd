"""The relay: a consumer group that ships a Kafka topic to an HTTP destination.

Each member takes a batch of messages from its partitions, sends their events (the exact
bytes, unchanged) through meterline's delivery with its retry policy, keeps what the
destination rejected (and what cannot be an event) in the journal's ``rejected/``, and only
then commits, per partition, the offset after the batch's last message. Events the
destination did not take stay *in Kafka*: the member stops taking new messages, keeps its
group membership alive, and sends the same batch again (one probe per ``probe_interval``,
``auth_probe_interval`` after a refusal) until it is delivered or the member stops; nothing
of it is committed meanwhile. The replicated log is the journal at fleet scale: a relay's
disk, which goes with its pod, holds only rejected events.

A crash or restart resends from the last commit, and a rebalance hands a partition over at
its last commit (a member never commits a partition it lost): the idempotency key keeps the
platform's count exact. A 429 slows every member (``_pause``), and ``max_rate`` splits a
group-wide rate by partition share.

Why this module is long: the batch loop, holding a batch through an outage while the group
membership stays alive, and the rebalance callbacks share the same offsets and the same
held batch; the message reading, the group pause and the small parts (figures, the batch,
the settings checks) are already their own modules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from meterline._config import Config
from meterline._delivery import Delivery
from meterline._endpoint import transport_factory
from meterline._errors import ConfigError, JournalError
from meterline._outcomes import I_BODY, I_KEY, Item
from meterline._stats import Counters, RateLimitedLog
from meterline._transport import Transport
from meterline.destinations.kafka import Kafka, parse_kafka_url
from meterline.journal import Journal

from ._messages import Unreadable, read_message
from ._parts import Batch, RelayStats, Watched, check_consumer_settings
from ._pause import GroupPause

__all__ = ["Relay", "RelayStats"]

log = logging.getLogger("meterline.relay")


class Relay:
    """Ship ``source`` (``kafka://host:port[,...]/topic``) to ``destination`` as member of
    consumer group ``group``. ``run()`` blocks until ``stop()`` (or SIGTERM in the command).

    ``api_key``, ``base_url``, ``journal_dir`` and the other options are a ``Client``'s, for
    the destination. ``consumer_config`` passes librdkafka settings (security, fetch sizes);
    the group, the brokers and offset handling are the relay's own. ``max_rate``: events per
    second for the whole group, split by each member's share of the partitions.
    """

    def __init__(
        self,
        source: str,
        *,
        group: str,
        destination: Any = "orb",
        api_key: str | None = None,
        base_url: str | None = None,
        journal_dir: Any = None,
        consumer_config: Mapping[str, Any] | None = None,
        max_rate: float | None = None,
        batch_events: int | None = None,
        progress_interval: float = 10.0,
        on_progress: Callable[[RelayStats], None] | None = None,
        group_pause: bool = True,
        transport: Transport | None = None,
        **options: Any,
    ) -> None:
        parsed = parse_kafka_url(source, what="source")
        if parsed.topic is None:
            raise ConfigError("source must name a topic: kafka://host:port/topic")
        if not isinstance(group, str) or not group.strip():
            raise ConfigError("group must be a non-empty consumer group id")
        config = Config.from_env(api_key, base_url, journal_dir, destination=destination, **options)
        if isinstance(config.destination, Kafka):
            raise ConfigError("a relay ships to an HTTP destination, not to kafka")
        if config.api_key is None and transport is None:
            raise ConfigError("no API key: pass api_key= or set METERLINE_API_KEY")
        settings = dict(consumer_config or {})
        check_consumer_settings(settings, group)
        if isinstance(progress_interval, bool) or not progress_interval > 0:
            raise ConfigError(f"progress_interval must be > 0 seconds, got {progress_interval!r}")
        if max_rate is not None and (isinstance(max_rate, bool) or not max_rate > 0):
            raise ConfigError(f"max_rate must be a positive number of events/s, got {max_rate!r}")
        limit = config.max_batch_events
        batch = limit if batch_events is None else batch_events
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 100_000:
            raise ConfigError(f"batch_events must be an int from 1 to 100000, got {batch!r}")
        self.config = config
        self.topic: str = parsed.topic
        self.group = group
        self._bootstrap = parsed.bootstrap
        self._settings = settings
        self._batch_events = batch
        self._max_rate = max_rate
        self._progress_interval = progress_interval
        self._on_progress = on_progress
        self._use_pause = group_pause
        self._stop = threading.Event()
        self._counters = Counters()
        make = transport_factory(config) if transport is None else (lambda: transport)
        self._pause: GroupPause | None = None
        self._delivery = Delivery(
            config,
            transport_factory=lambda: Watched(make(), self._slow_down),
            counters=self._counters,
            settle=lambda items, outcome, reason: None,  # the relay settles itself
            park=lambda batch: None,
            stopping=self._stop,
            sleep=self._sleep,
        )
        self._journal = Journal(
            config.resolved_journal_dir(),
            max_bytes=config.journal_max_bytes,
            max_age=config.journal_max_age,
            min_free_bytes=config.journal_min_free_bytes,
            fingerprint=config.journal_fingerprint,
            key_field=config.destination.key_field,
        )
        Journal.check_directory(config.resolved_journal_dir())
        self._consumer: Any = None
        self._lock = threading.Lock()
        self._assigned: set[int] = set()
        self._next: dict[int, int] = {}  # partition -> next offset to commit (settled)
        self._committed: dict[int, int] = {}
        self._lost: set[int] = set()  # partitions lost while a batch was held
        self._share = 1.0
        self._next_send = 0.0
        self._held = 0
        self._in_batch = False
        self._paused = False
        self._reassigned = False
        self._early: list[Any] = []  # messages that arrived while a batch was held
        self._stopped_at: float | None = None
        self._lags: tuple[tuple[int, ...], dict[int, int]] = ((), {})
        self._last_lag = 0.0
        self._stop_bound = config.shutdown_timeout + config.timeout + 1.0
        self._failure: BaseException | None = None
        self._n = {"consumed": 0, "delivered": 0, "rejected": 0, "duplicates": 0}
        self._n.update(handed_over=0, committed=0)
        self._last_error = ""
        self._last_progress = time.monotonic()
        self._rlog = RateLimitedLog()

    def __repr__(self) -> str:
        return (
            f"Relay(source='kafka://{self._bootstrap}/{self.topic}', group={self.group!r}, "
            f"destination={self.config.destination.name!r}, base_url={self.config.base_url!r})"
        )

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> RelayStats:
        """Consume, deliver, commit, until ``stop()``. ``FormatMismatchError`` (a
        ``ConfigError``) when the topic holds another destination's format.

        The work runs on a thread of its own, so that ``run()`` returns within
        ``shutdown_timeout`` of ``stop()`` even when the broker stopped answering (a commit
        or a close in librdkafka has no time limit): what was not committed by then is sent
        again by the group."""
        worker = threading.Thread(target=self._work, name="meterline-relay", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            stopped = self._stopped_at
            if stopped is not None and time.monotonic() > stopped + self._stop_bound:
                log.error(
                    "meterline relay %s: did not stop within %gs (the broker does not "
                    "answer); leaving it: what was not committed is sent again by the group",
                    self.group,
                    self._stop_bound,
                )
                break
        if self._failure is not None:
            raise self._failure
        return self.stats()

    def _stop_overdue(self) -> bool:
        stopped = self._stopped_at
        return stopped is not None and time.monotonic() > stopped + self.config.shutdown_timeout

    def _work(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - handed to run()'s caller
            self._failure = exc

    def _loop(self) -> None:
        try:
            self._journal.open()
            if self._use_pause:
                self._pause = GroupPause(
                    self._bootstrap,
                    self.topic,
                    self.group,
                    self._settings,
                    cap=self.config.retry_after_max,
                )
            try:
                self._consumer = consumer = Consumer(self._consumer_settings())
            except KafkaException as exc:
                raise ConfigError(f"consumer_config refused by librdkafka: {exc}") from None
            consumer.subscribe(
                [self.topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lose
            )
            while not self._stop.is_set():
                self._resume()
                if self._early:  # taken while a batch was held: they come first
                    messages, self._early = self._early, []
                else:
                    messages = consumer.consume(self._batch_events, timeout=0.2)
                self._tick()
                if not messages:
                    continue
                batch = self._read(messages)
                if self._settle(batch):
                    self._commit(batch)
        finally:
            self._finish()

    def _consumer_settings(self) -> dict[str, Any]:
        return {
            "client.id": "meterline-relay",
            "auto.offset.reset": "earliest",
            # A member that died hands its partitions over after 10 s, not Kafka's 45.
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            **self._settings,
            "bootstrap.servers": self._bootstrap,
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "logger": log,
            "error_cb": self._on_error,
        }

    def stop(self) -> None:
        """End ``run()`` within ``shutdown_timeout`` (plus a request's ``timeout`` when one is
        in flight); what is not delivered by then is not committed (the group sends it
        again). Safe from a signal handler and from any thread."""
        now = time.monotonic()
        if self._stopped_at is None:
            self._stopped_at = now
        self._delivery.deadline = now + self.config.shutdown_timeout
        self._stop.set()

    def _read(self, messages: list[Any]) -> Batch:
        batch = Batch()
        seen = batch.partition_of
        fmt = self.config.destination.name
        field = self.config.destination.key_field
        biggest = self.config.max_event_bytes
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._note(f"consume: {err.str()}")
                continue
            batch.count += 1
            partition = msg.partition()
            batch.next_offset[partition] = msg.offset() + 1
            batch.counts[partition] = batch.counts.get(partition, 0) + 1
            got = read_message(msg, fmt=fmt, key_field=field, max_bytes=biggest)
            if isinstance(got, Unreadable):
                batch.unreadable.append((got, partition))
            elif got[I_KEY] in seen:
                self._n["duplicates"] += 1
            else:
                seen[got[I_KEY]] = partition
                batch.items.append(got)
        self._n["consumed"] += batch.count
        return batch

    def _settle(self, batch: Batch) -> bool:
        """Deliver or keep every event of the batch; False when the member stopped first."""
        pending = batch.items
        unreadable = [(u.body, [u.reason]) for u, _ in batch.unreadable]
        probing = False
        self._held = len(pending)
        self._in_batch = True
        try:
            while True:
                if unreadable and self._keep_rejected(unreadable):
                    self._n["rejected"] += len(unreadable)
                    log.warning(
                        "meterline relay: kept %d unreadable message(s) in rejected/, e.g. %s",
                        len(unreadable),
                        unreadable[0][1][0],
                    )
                    unreadable = []
                pending = self._not_lost(pending, batch.partition_of)
                if pending and self._wait_turn(len(pending)):
                    result = self._delivery.try_send(pending, single=probing)
                    self._n["delivered"] += len(result.delivered)
                    refused = [(it[I_BODY], why) for it, why in result.rejected]
                    if refused and not self._keep_rejected(refused):
                        pending = result.pending + [it for it, _ in result.rejected]
                    else:
                        self._n["rejected"] += len(refused)
                        pending = result.pending
                    if result.pending:
                        self._note(result.error or "not delivered")
                    self._held = len(pending)
                    if pending:
                        probing = True
                        wait = self.config.probe_interval
                        if result.refused:
                            wait = self.config.auth_probe_interval
                        self._rlog.log(
                            logging.ERROR if result.refused else logging.WARNING,
                            "holding",
                            "meterline relay: %d event(s) not delivered (%s); holding them in "
                            "Kafka (not committed) and trying again in %gs",
                            len(pending),
                            result.error or "unknown error",
                            wait,
                        )
                        self._idle(wait)
                if not pending and not unreadable:
                    return True
                if self._stop.is_set():
                    return False
                if not pending:
                    self._idle(self.config.probe_interval)  # rejected/ could not be written
        finally:
            self._held = 0
            self._in_batch = False

    def _not_lost(self, items: list[Item], partition_of: Mapping[str, int]) -> list[Item]:
        with self._lock:
            lost = set(self._lost)
        if not lost:
            return items
        kept = [it for it in items if partition_of.get(it[I_KEY]) not in lost]
        self._n["handed_over"] += len(items) - len(kept)
        return kept

    def _keep_rejected(self, pairs: list[tuple[bytes, list[str]]]) -> bool:
        """Write events with their reasons to ``rejected/``; False when the disk refused."""
        try:
            claim = self._journal.spill_held([body for body, _ in pairs])
            self._journal.settle(claim, rejected=pairs)
        except (JournalError, OSError, ValueError) as exc:
            self._note(f"cannot keep rejected events: {exc}")
            self._rlog.log(
                logging.ERROR,
                "rejectlog",
                "meterline relay: cannot keep %d rejected event(s) (%s); not committing them",
                len(pairs),
                exc,
            )
            return False
        return True

    def _commit(self, batch: Batch) -> None:
        """Commit the batch's partitions this member still owns and did not lose while the
        batch was held (their held events were handed over, and the partition, if assigned
        again, starts over from its last commit)."""
        with self._lock:
            mine = {
                p: o
                for p, o in batch.next_offset.items()
                if p in self._assigned and p not in self._lost
            }
            self._lost.clear()
            self._next.update(mine)
        if not mine:
            return
        tps = [TopicPartition(self.topic, p, o) for p, o in mine.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            self._note(f"commit: {exc}")  # the next commit covers these offsets
            return
        with self._lock:
            self._committed.update(mine)
            self._n["committed"] += sum(batch.counts.get(p, 0) for p in mine)

    def _resume(self) -> None:
        """Fetch from the whole assignment again after a hold, or after a rebalance: a
        partition paused, revoked and assigned again stays paused in librdkafka."""
        if self._paused or self._reassigned:
            self._paused = self._reassigned = False
            try:
                self._consumer.resume(self._consumer.assignment())
            except KafkaException as exc:
                self._note(f"resume: {exc}")

    # -- while a batch is held, and between batches -----------------------------------------

    def _idle(self, seconds: float) -> None:
        """Wait, stop-aware, keeping the group membership alive. The partitions are paused;
        a message that arrives anyway (from a partition assigned meanwhile) is kept for the
        next batch, never skipped."""
        end = time.monotonic() + seconds
        consumer = self._consumer
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                self._paused = True
                consumer.pause(consumer.assignment())
                self._early += consumer.consume(100, timeout=min(0.2, left))
                consumer.pause(consumer.assignment())
            except KafkaException as exc:
                self._note(f"idle: {exc}")
            self._tick()
        return

    def _wait_turn(self, n: int) -> bool:
        """Wait for the group's pause and this member's share of ``max_rate``."""
        while not self._stop.is_set():
            pause = self._pause.remaining() if self._pause is not None else 0.0
            rate_wait = max(0.0, self._next_send - time.monotonic())
            wait = max(pause, rate_wait)
            if wait <= 0:
                break
            self._idle(min(wait, 0.5))
        if self._stop.is_set():
            return False
        if self._max_rate is not None:
            rate = self._max_rate * self._share
            self._next_send = max(time.monotonic(), self._next_send) + n / max(rate, 1e-6)
        return True

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _slow_down(self, delay: float) -> None:
        if self._pause is not None:
            self._pause.publish(delay)

    def _tick(self) -> None:
        if self._pause is not None:
            self._pause.poll()
        now = time.monotonic()
        if now - self._last_lag >= 1.0:
            self._last_lag = now
            self._measure_lag()
        if now - self._last_progress >= self._progress_interval:
            self._last_progress = now
            stats = self.stats()
            log.info(
                "meterline relay %s: delivered %d, rejected %d, committed %d, lag %s, "
                "partitions %s%s",
                self.group,
                stats.delivered,
                stats.rejected,
                stats.committed,
                "?" if stats.lag is None else stats.lag,
                list(stats.partitions),
                f", holding {stats.holding}" if stats.holding else "",
            )
            if self._on_progress is not None:
                try:
                    self._on_progress(stats)
                except Exception:
                    log.exception("meterline relay: on_progress raised")

    # -- the group ---------------------------------------------------------------------------

    def _assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assigned = {tp.partition for tp in partitions}
            self._reassigned = True
        self._refresh_share(consumer)
        log.info("meterline relay %s: assigned %s", self.group, sorted(self._assigned))

    def _revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions leave this member: commit what was settled for them (a batch held
        for them is not settled, so it is not committed), then forget them."""
        gone = {tp.partition for tp in partitions}
        with self._lock:
            settled = {p: o for p, o in self._next.items() if p in gone}
            self._assigned -= gone
            # Taken early under the old assignment: the next owner (this member too, if
            # the partition comes back) fetches them again from the last commit.
            self._early = [m for m in self._early if m.partition() not in gone]
            if self._in_batch:
                self._lost |= gone
            for p in gone:
                self._next.pop(p, None)
        if settled:
            try:
                consumer.commit(
                    offsets=[TopicPartition(self.topic, p, o) for p, o in settled.items()],
                    asynchronous=False,
                )
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not (isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET):
                    self._note(f"commit on revoke: {exc}")

    def _lose(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a revoke (the session expired): commit nothing."""
        gone = {tp.partition for tp in partitions}
        with self._lock:
            self._assigned -= gone
            self._early = [m for m in self._early if m.partition() not in gone]
            if self._in_batch:
                self._lost |= gone
            for p in gone:
                self._next.pop(p, None)

    def _refresh_share(self, consumer: Any) -> None:
        if self._max_rate is None:
            return
        try:
            meta = consumer.list_topics(self.topic, timeout=5)
            total = len(meta.topics[self.topic].partitions)
        except (KafkaException, KeyError):
            return
        self._share = len(self._assigned) / total if total else 1.0

    def _on_error(self, err: KafkaError) -> None:
        self._note(f"kafka: {err.name()}: {err.str()}")

    def _note(self, text: str) -> None:
        self._last_error = self._delivery.clean(text)[:300]

    def _finish(self) -> None:
        self._early = []
        if self._consumer is not None and not self._stop_overdue():
            self._measure_lag()  # the last figures, for the final progress line
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()  # leaves the group at once (the revoke commits)
            except (KafkaException, RuntimeError) as exc:
                self._note(f"close: {exc}")
        if self._pause is not None:
            self._pause.close()
        self._delivery.close()
        self._journal.close()

    # -- what it tells -----------------------------------------------------------------------

    def _measure_lag(self) -> None:
        """Lag per partition from the last fetched high watermarks, on the relay's own
        thread (a call on the consumer from another thread waits behind consume())."""
        with self._lock:
            assigned = tuple(sorted(self._assigned))
            committed = dict(self._committed)
        lags: dict[int, int] = {}
        consumer = self._consumer
        if consumer is not None:
            for p in assigned:
                try:
                    tp = TopicPartition(self.topic, p)
                    low, high = consumer.get_watermark_offsets(tp, cached=True)
                    done = committed.get(p)
                    if done is None:
                        done = consumer.position([tp])[0].offset
                    if done is None or done < 0:  # nothing consumed or committed here yet
                        done = low
                except (KafkaException, RuntimeError, IndexError):
                    continue
                if high is not None and high >= 0 and done is not None and done >= 0:
                    lags[p] = max(0, high - done)
        self._lags = (assigned, lags)

    def stats(self) -> RelayStats:
        """Counters since start; lag as last measured (every second) by the relay."""
        with self._lock:
            assigned = tuple(sorted(self._assigned))
        measured_for, lags = self._lags
        if measured_for != assigned:
            lags = {p: n for p, n in lags.items() if p in assigned}
        pause = self._pause
        return RelayStats(
            consumed=self._n["consumed"],
            delivered=self._n["delivered"],
            rejected=self._n["rejected"],
            duplicates=self._n["duplicates"],
            handed_over=self._n["handed_over"],
            committed=self._n["committed"],
            retried=self._counters.retried,
            holding=self._held,
            lag=sum(lags.values()) if len(lags) == len(assigned) and assigned else None,
            partitions=assigned,
            paused_for=pause.remaining() if pause is not None else 0.0,
            pauses_published=pause.published if pause is not None else 0,
            pauses_heard=pause.heard if pause is not None else 0,
            last_error=self._last_error,
            per_partition_lag=lags,
        )
