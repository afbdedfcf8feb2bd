"""Where events go: one small module per billing platform, and the ``Destination`` protocol.

``Client(destination="lago")`` picks a built-in by name with its defaults;
``Client(destination=meterline.destinations.Stripe(customer_payload_key="customer"))``
passes a configured one. Any object that has the members of ``Destination`` works.
"""

from __future__ import annotations

from meterline._errors import ConfigError

from ._base import Answer, Destination, Session, SessionGrant
from .kafka import Kafka
from .lago import Lago
from .metronome import Metronome
from .openmeter import OpenMeter
from .orb import Orb
from .stripe import Stripe

__all__ = [
    "Answer",
    "Destination",
    "Kafka",
    "Lago",
    "Metronome",
    "OpenMeter",
    "Orb",
    "Session",
    "SessionGrant",
    "Stripe",
    "resolve",
]

# name -> the class built with its defaults by ``resolve("name")`` (not in __all__: a table)
BUILT_IN: dict[str, type] = {
    "orb": Orb,
    "metronome": Metronome,
    "lago": Lago,
    "openmeter": OpenMeter,
    "stripe": Stripe,
    "kafka": Kafka,
}

_MEMBERS = (
    "name",
    "default_base_url",
    "max_batch_events",
    "key_field",
    "content_type",
    "has_rules",
    "ingest_url",
    "headers",
    "session",
    "check",
    "serialize_many",
    "envelope",
    "read",
)


def resolve(destination: object) -> Destination:
    """A destination object from a name or an object; ``ConfigError`` for anything else."""
    if isinstance(destination, str):
        cls = BUILT_IN.get(destination.strip().lower())
        if cls is None:
            known = ", ".join(sorted(BUILT_IN))
            raise ConfigError(f"unknown destination {destination!r}; known: {known}")
        made: Destination = cls()
        return made
    if isinstance(destination, type):
        raise ConfigError(
            f"destination must be a name or a Destination object, not the class "
            f"{destination.__name__} (write {destination.__name__}())"
        )
    missing = [m for m in _MEMBERS if not hasattr(destination, m)]
    if missing:
        raise ConfigError(
            f"destination must be a name or a Destination; {type(destination).__name__} "
            f"lacks {', '.join(missing)}"
        )
    name = getattr(destination, "name", None)
    limit = getattr(destination, "max_batch_events", None)
    if not isinstance(name, str) or not name or not name.isidentifier():
        raise ConfigError(f"a destination's name must be a short identifier, got {name!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"a destination's max_batch_events must be >= 1, got {limit!r}")
    return destination  # type: ignore[return-value]
