"""close() with a healthy endpoint delivers the queue and the journal backlog before it returns.

Scenario 24 of the regression issue.
"""

from __future__ import annotations

from pathlib import Path

from meterline.testing import wait_until
from tests.regressions.helpers import journal_keys
from tests.support.fault_server import FaultServer

AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def test_close_after_a_healed_outage_delivers_the_backlog_before_returning(
    server: FaultServer, make_client, journal_dir: Path
):
    """20,000 events reported into a ~1.5 s outage: once it has healed, flush(60) and then
    close() return with all 20,000 at the endpoint and nothing left in ready/."""
    server.blip(503, 1.5)
    client = make_client(retry_attempts=1)
    keys = [client.report("cust_1", "api_call", {"i": i}) for i in range(20_000)]
    wait_until(lambda: not server.in_outage(), timeout=5)
    assert client.flush(60)
    client.close()
    delivered = len(set(keys) & server.keys())
    assert delivered == 20_000, f"{delivered} of 20,000 delivered when close() returned"
    assert journal_keys(journal_dir) == []


def test_close_after_a_tight_loop_delivers_all_fifty_thousand(
    server: FaultServer, make_client, journal_dir: Path
):
    """50,000 ordinary events (five properties) reported in a tight loop to a healthy
    endpoint: close() returns with all of them delivered and nothing left in ready/."""
    client = make_client(flush_interval=1.0)  # the default timer
    keys = [
        client.report(
            f"cust_{i % 50}",
            "api_call",
            {"i": i, "tokens": 812, "model": "small", "route": "/v1/chat", "agent": AGENT},
        )
        for i in range(50_000)
    ]
    result = client.close()
    delivered = len(set(keys) & server.keys())
    missing = sorted(set(keys) - server.keys())[:3]
    assert delivered == 50_000, (
        f"{delivered} of 50,000 delivered when close() returned: {result}, "
        f"stats {dict(client.stats())}, missing e.g. {missing}, "
        f"{len(journal_keys(journal_dir))} in the journal"
    )
    assert journal_keys(journal_dir) == []
