"""Choosing a destination: by name, by object or from the environment, with its defaults,
its limits and a journal of its own."""

from __future__ import annotations

import pytest

import meterline
from meterline import ConfigError
from meterline._config import Config
from meterline.destinations import Lago, Metronome, OpenMeter, Orb, Stripe, resolve


@pytest.mark.parametrize(
    ("name", "cls", "url", "limit"),
    [
        ("orb", Orb, "https://api.withorb.com/v1", 500),
        ("metronome", Metronome, "https://api.metronome.com", 100),
        ("lago", Lago, "https://api.getlago.com/api/v1", 100),
        ("openmeter", OpenMeter, "https://openmeter.cloud", 100),
        ("stripe", Stripe, "https://api.stripe.com", 100),
    ],
)
def test_a_name_gives_the_destination_with_its_url_and_limit(name, cls, url, limit):
    """Each built-in name resolves to its class, its public URL and its batch limit."""
    config = Config.from_env("k", environ={}, destination=name)
    assert isinstance(config.destination, cls)
    assert config.base_url == url
    assert config.max_batch_events == limit


def test_the_environment_names_the_destination():
    """METERLINE_DESTINATION picks the destination when none is passed; an argument wins."""
    env = {"METERLINE_DESTINATION": "lago"}
    assert Config.from_env("k", environ=env).destination.name == "lago"
    assert Config.from_env("k", environ=env, destination="orb").destination.name == "orb"


def test_unknown_destination_is_a_config_error_listing_the_known_ones():
    """A misspelt name is refused at construction, naming the five it could be."""
    with pytest.raises(ConfigError, match="known: kafka, lago, metronome, openmeter, orb, stripe"):
        meterline.Client("k", destination="lgo")


def test_more_events_per_batch_than_the_vendor_takes_is_refused():
    """max_batch_events above the destination's limit would make every request fail."""
    with pytest.raises(ConfigError, match="at most 100"):
        Config.from_env("k", environ={}, destination="lago", max_batch_events=500)
    assert Config.from_env("k", environ={}, destination="lago", max_batch_events=50)


def test_customer_field_belongs_to_orb_only():
    """customer_field configures Orb; given with another destination it is an error."""
    assert Config.from_env("k", environ={}, customer_field="customer_id").destination == Orb(
        customer_field="customer_id"
    )
    with pytest.raises(ConfigError, match="orb destination"):
        Config.from_env("k", environ={}, destination="metronome", customer_field="customer_id")


@pytest.mark.parametrize(("name", "days"), [("stripe", 35), ("metronome", 34)])
def test_journal_max_age_stays_inside_the_vendors_window(name, days):
    """A journal that keeps batches longer than the vendor accepts events would hold ones
    it can never deliver (Stripe would drop them unseen): refused."""
    Config.from_env("k", environ={}, destination=name, journal_max_age=days * 86_400)
    with pytest.raises(ConfigError, match=f"at most {days} days"):
        Config.from_env("k", environ={}, destination=name, journal_max_age=(days + 1) * 86_400)


def test_each_destination_has_its_own_fingerprint_and_default_folder():
    """Same key and URL, another destination: another fingerprint and another folder, so no
    journal file is ever replayed to a destination it was not written for."""
    configs = [
        Config.from_env("k", "https://x.example", environ={}, destination=n)
        for n in ("orb", "metronome", "lago", "openmeter", "stripe")
    ]
    assert len({c.journal_fingerprint for c in configs}) == 5
    assert len({c.resolved_journal_dir() for c in configs}) == 5


def test_an_object_that_is_not_a_destination_is_refused_naming_what_it_lacks():
    """A wrong object is a ConfigError naming the members it lacks, not a crash later."""
    with pytest.raises(ConfigError, match="lacks"):
        resolve(object())
    with pytest.raises(ConfigError, match="unknown destination"):
        resolve("")


def test_a_configured_object_is_used_as_given(tmp_path):
    """A Destination object passed in keeps its options (Stripe's customer key here)."""
    stripe = Stripe(customer_payload_key="customer")
    client = meterline.Client("sk_test_x", destination=stripe, journal_dir=tmp_path)
    try:
        assert client.config.destination is stripe
        assert "stripe" in repr(client)
        assert "sk_test_x" not in repr(client) + repr(client.config)
    finally:
        client.close()
