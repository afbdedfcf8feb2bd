"""Lago and the journal: an outage is journaled and replayed with the same bytes, and a
journal written for Lago is never replayed to another destination."""

from __future__ import annotations

from typing import Any

import orjson

import meterline
from meterline._config import Config
from meterline.destinations import Metronome
from tests.destinations.vendor_servers import LagoServer, Reply
from tests.support.journal import ready_events


def _client(url: str, tmp_path: Any, **options: Any) -> meterline.Client:
    options.setdefault("flush_interval", 5)
    options.setdefault("destination", "lago")
    return meterline.Client(base_url=url, api_key="test", journal_dir=tmp_path / "j", **options)


def test_an_outage_is_journaled_then_replayed_with_the_same_bytes(tmp_path: Any) -> None:
    """Lago down: close() journals the batch; a later client on the same journal sends
    those exact event bytes once Lago is back, each stored once."""
    with LagoServer() as lago:
        lago.outage = Reply(503, {"status": 503, "error": "Service Unavailable"})
        first = _client(lago.url, tmp_path, retry_attempts=1)
        keys = {first.report("sub_1", "storage", {"gb": i + 0.5}) for i in range(30)}
        result = first.close(timeout=3)
        assert (result.journaled, result.sent, result.pending) == (30, 0, 0)
        assert ready_events(tmp_path / "j") == 30
        refused = lago.seen()
        lago.outage = None
        with _client(lago.url, tmp_path) as second:
            replay = second.replay(timeout=10)
        assert replay.replayed == 30
        assert lago.keys() == keys
        assert all(n == 1 for n in lago.deliveries.values())
        replayed = [r for r in lago.seen() if r.status == 200]
        assert replayed[0].raw == refused[0].raw  # one batch of 30, byte for byte
        assert ready_events(tmp_path / "j") == 0


class _MetronomeAtLagosUrl(Metronome):
    """Metronome posting to Lago's ingest URL: only the destination's name differs."""

    def ingest_url(self, base_url: str) -> str:
        return f"{base_url}/events/batch"


def test_a_lago_journal_is_never_replayed_to_metronome(tmp_path: Any) -> None:
    """A journal written for Lago stays put when a Metronome client, even one posting to
    the very same URL with the same key, replays that directory: the fingerprint names
    the destination."""
    with LagoServer() as lago:
        lago.outage = Reply(503, {"status": 503, "error": "Service Unavailable"})
        first = _client(lago.url, tmp_path, retry_attempts=1)
        for i in range(10):
            first.report("sub_1", "storage", {"gb": i})
        assert first.close(timeout=3).journaled == 10
        lago.outage = None
        before = len(lago.seen())
        other = _MetronomeAtLagosUrl()
        same_url = Config(destination=other, base_url=lago.url, api_key="test")
        assert same_url.ingest_url == first.config.ingest_url
        assert same_url.journal_fingerprint != first.config.journal_fingerprint
        with _client(lago.url, tmp_path, destination=other) as second:
            replay = second.replay(timeout=5)
        assert (replay.replayed, replay.set_aside) == (0, 1)
        assert len(lago.seen()) == before
        assert ready_events(tmp_path / "j") == 10
        with _client(lago.url, tmp_path) as third:  # Lago's own client still can
            assert third.replay(timeout=10).replayed == 10
        sent = [orjson.loads(r.raw) for r in lago.seen()[before:]]
        assert all("code" in e for doc in sent for e in doc["events"])
