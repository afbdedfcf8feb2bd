"""The checks ``Config.__post_init__`` runs on single values; each raises ``ConfigError``
with a message that never holds the API key."""

from __future__ import annotations

from ._errors import ConfigError

__all__ = ["check_api_key", "positive_float", "positive_int"]


def check_api_key(key: object) -> None:
    """Refuse a key that no HTTP header can carry as given; the message never holds the key.

    A pasted zero-width space, a trailing blank from a ``.env`` file or a line break would
    otherwise fail on the worker (or be sent as a different credential) for every batch.
    """
    if key is None:
        return
    if not isinstance(key, str) or not key:
        raise ConfigError("api_key must be a non-empty string")
    for index, char in enumerate(key):
        if not "!" <= char <= "~":
            what = "whitespace" if char.isspace() else f"the character U+{ord(char):04X}"
            raise ConfigError(
                f"api_key has {what} at position {index} of {len(key)}: an API key is "
                "printable ASCII without spaces (check for a pasted or trailing character)"
            )


def positive_float(config: object, name: str, *, allow_zero: bool = False) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    object.__setattr__(config, name, float(value))


def positive_int(config: object, name: str, *, allow_zero: bool = False) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
