"""``meterline relay``: ship a Kafka topic that meterline's Kafka destination fills to an HTTP
destination, as a consumer group, committing only what was delivered or kept.

``Relay("kafka://broker:9092/usage", group="billing", destination="orb", api_key=...).run()``
"""

from __future__ import annotations

from ._messages import FormatMismatchError
from ._parts import RelayStats
from ._relay import Relay

__all__ = ["FormatMismatchError", "Relay", "RelayStats"]
