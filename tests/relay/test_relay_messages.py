"""read_message on its own: what the relay makes of one Kafka message."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from meterline._errors import ConfigError
from meterline._outcomes import I_BODY, I_KEY, Item
from meterline.relay import FormatMismatchError
from meterline.relay._messages import Unreadable, read_message


class Msg:
    def __init__(self, value: Any, headers: Any = None, partition: int = 3, offset: int = 41):
        self._value, self._headers = value, headers
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return "usage"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> Any:
        return self._value

    def headers(self) -> Any:
        return self._headers

    def error(self) -> None:
        return None


def hdrs(key: str | None = "k1", fmt: str | None = "orb") -> list[tuple[str, bytes]]:
    out = []
    if key is not None:
        out.append(("meterline-idempotency-key", key.encode()))
    if fmt is not None:
        out.append(("meterline-format", fmt.encode()))
    return out


BODY = orjson.dumps({"idempotency_key": "k1", "event_name": "e"})


def read(msg: Msg, max_bytes: int = 1000) -> Item | Unreadable:
    return read_message(msg, fmt="orb", key_field="idempotency_key", max_bytes=max_bytes)


def test_an_event_is_its_exact_bytes_under_its_key() -> None:
    got = read(Msg(BODY, hdrs()))
    assert isinstance(got, tuple)
    assert got[I_KEY] == "k1"
    assert got[I_BODY] == BODY
    assert isinstance(got[I_BODY], bytes)


def test_headers_are_optional() -> None:
    assert isinstance(read(Msg(BODY, None)), tuple)
    assert isinstance(read(Msg(BODY, [("other", b"x"), ("meterline-format", None)])), tuple)


def test_another_format_is_a_configuration_error_naming_the_place() -> None:
    with pytest.raises(FormatMismatchError) as caught:
        read(Msg(BODY, hdrs(fmt="lago")))
    assert isinstance(caught.value, ConfigError)
    assert "usage[3]@41" in str(caught.value)
    assert "--to lago" in str(caught.value)


def test_format_is_checked_before_anything_else() -> None:
    with pytest.raises(FormatMismatchError):
        read(Msg(None, hdrs(fmt="lago")))


@pytest.mark.parametrize(
    ("value", "headers", "why"),
    [
        (None, hdrs(), "no value"),
        (b"", hdrs(), "no value"),
        (b"x" * 1001, hdrs(), "more than 1000"),
        (b"not json", hdrs(), "not JSON"),
        (b"[1]", hdrs(), "not a JSON object"),
        (b'"s"', hdrs(), "not a JSON object"),
        (b'{"event_name": "e"}', hdrs(), "no idempotency_key"),
        (b'{"idempotency_key": ""}', hdrs(), "no idempotency_key"),
        (b'{"idempotency_key": 7}', hdrs(), "no idempotency_key"),
        (BODY, hdrs(key="other"), "header key differs"),
    ],
)
def test_unreadable_messages_say_where_and_why(value: Any, headers: Any, why: str) -> None:
    got = read(Msg(value, headers))
    assert isinstance(got, Unreadable)
    assert got.reason.startswith("kafka usage[3]@41: "), got.reason
    assert why in got.reason, got.reason
    doc = orjson.loads(got.body)
    assert doc["idempotency_key"] == got.key
    assert isinstance(doc["meterline_relay_unreadable"], str)


def test_an_unreadable_message_without_a_key_is_kept_under_its_place() -> None:
    got = read(Msg(b"nope", hdrs(key=None)))
    assert isinstance(got, Unreadable)
    assert got.key == "kafka:usage[3]@41"
    assert orjson.loads(got.body)["meterline_relay_unreadable"] == "nope"


def test_an_unreadable_value_that_is_not_utf8_is_kept_replaced() -> None:
    got = read(Msg(b"\xff\xfe", hdrs()))
    assert isinstance(got, Unreadable)
    assert got.key == "k1"
    assert orjson.loads(got.body)["meterline_relay_unreadable"] == "\ufffd\ufffd"
