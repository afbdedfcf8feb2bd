"""Config: defaults, environment fallbacks, and a ConfigError for anything wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

import meterline
from meterline import Config, ConfigError


def test_defaults_match_the_documented_table():
    """The defaults are the ones the README documents."""
    c = Config(api_key="k")
    assert c.base_url == "https://api.withorb.com/v1"
    assert (c.flush_interval, c.max_batch_events, c.max_batch_bytes) == (1.0, 500, 512 * 1024)
    assert (c.max_queue_events, c.max_queue_bytes) == (100_000, 16 * 1024 * 1024)
    assert c.max_event_bytes == 32 * 1024
    assert (c.timeout, c.connect_timeout) == (10.0, 2.0)
    assert (c.retry_attempts, c.retry_deadline) == (4, 30.0)
    assert c.replay_interval == 30.0
    assert c.shutdown_timeout == 5.0
    assert (c.journal_max_bytes, c.journal_max_age) == (1 << 30, 7 * 86400.0)
    assert c.customer_field == "external_customer_id"
    assert c.durability == "spill"
    assert c.ingest_url == "https://api.withorb.com/v1/ingest"


def test_environment_fallbacks():
    """Arguments fall back to METERLINE_* variables; explicit arguments win."""
    env = {
        "METERLINE_API_KEY": "from-env",
        "METERLINE_BASE_URL": "http://127.0.0.1:9/v1/",
        "METERLINE_JOURNAL_DIR": "/tmp/x",
        "METERLINE_FLUSH_INTERVAL": "0.5",
        "METERLINE_SHUTDOWN_TIMEOUT": "2",
        "METERLINE_DURABILITY": "write_ahead",
    }
    c = Config.from_env(environ=env)
    assert c.api_key == "from-env"
    assert c.base_url == "http://127.0.0.1:9/v1"
    assert c.journal_dir == Path("/tmp/x")
    assert (c.flush_interval, c.shutdown_timeout, c.durability) == (0.5, 2.0, "write_ahead")
    c2 = Config.from_env("explicit", environ=env, flush_interval=3)
    assert c2.api_key == "explicit"
    assert c2.flush_interval == 3.0


@pytest.mark.parametrize(
    "options",
    [
        {"flush_interval": 0},
        {"flush_interval": -1},
        {"flush_interval": float("nan")},
        {"flush_interval": "1"},
        {"max_batch_events": 0},
        {"max_batch_events": 1.5},
        {"max_batch_events": True},
        {"durability": "fsync"},
        {"customer_field": "customer"},
        {"base_url": "ftp://x"},
        {"base_url": "https://user:pw@host/v1"},
        {"max_batch_events": 200_000},
        {"max_event_bytes": 600_000},
        {"gzip": "yes"},
    ],
)
def test_invalid_options_raise_config_error(options):
    """Every invalid value is a ConfigError (a ValueError) naming the option."""
    with pytest.raises(ConfigError):
        Config(api_key="k", **options)


def test_unknown_option_is_named():
    """A misspelt option raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="flush_intervall"):
        meterline.Client(api_key="k", flush_intervall=1)


def test_missing_api_key_is_a_config_error(monkeypatch):
    """Without a key (and without a custom transport) the client refuses to start."""
    monkeypatch.delenv("METERLINE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="API key"):
        meterline.Client()


def test_repr_never_shows_the_key(tmp_path):
    """Neither the config nor the client repr contains the API key."""
    c = meterline.Client(api_key="sk_secret_123", journal_dir=tmp_path / "j")
    assert "sk_secret_123" not in repr(c)
    assert "sk_secret_123" not in repr(c.config)
    assert "sk_secret_123" not in str(c.config)


def test_default_journal_dir_is_per_user_and_per_endpoint(monkeypatch, tmp_path):
    """Without journal_dir the journal lives in the user's state dir, one folder per endpoint."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    a = Config(api_key="k", base_url="https://a.example/v1").resolved_journal_dir()
    b = Config(api_key="k", base_url="https://b.example/v1").resolved_journal_dir()
    assert a.parent == b.parent == tmp_path / "meterline"
    assert a != b


def test_creating_a_client_does_no_io(tmp_path):
    """A new client creates no journal directory and starts no thread."""
    import threading

    before = threading.active_count()
    meterline.Client(api_key="k", journal_dir=tmp_path / "j")
    assert not (tmp_path / "j").exists()
    assert threading.active_count() == before
