"""The public surface is exactly what __all__ says, sorted, and nothing private leaks."""

from __future__ import annotations

import meterline
import meterline.testing


def test_all_is_sorted_and_complete():
    """__all__ is sorted and every name in it exists."""
    assert meterline.__all__ == sorted(meterline.__all__)
    for name in meterline.__all__:
        assert hasattr(meterline, name)


def test_public_names_are_exactly_all():
    """No public attribute exists that __all__ does not list (modules aside)."""
    import types

    public = {
        n
        for n, v in vars(meterline).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public == set(meterline.__all__) - {"__version__"}


def test_error_tree_subclasses_builtins():
    """Typed errors also match the builtin a caller would naturally catch."""
    assert issubclass(meterline.InvalidEventError, ValueError)
    assert issubclass(meterline.ConfigError, ValueError)
    assert issubclass(meterline.ClientClosedError, RuntimeError)
    assert issubclass(meterline.JournalError, OSError)
    for name in ("InvalidEventError", "ConfigError", "ClientClosedError", "JournalError"):
        assert issubclass(getattr(meterline, name), meterline.MeterlineError)


def test_testing_module_surface():
    """meterline.testing offers the documented helpers."""
    assert meterline.testing.__all__ == [
        "FlakyTransport",
        "RecordingTransport",
        "TransportError",
        "accepted",
        "wait_until",
    ]


def test_destinations_module_surface():
    """meterline.destinations offers the protocol, the built-ins and resolve(), sorted."""
    import meterline.destinations as d

    assert d.__all__ == sorted(d.__all__)
    assert set(d.BUILT_IN) <= {"orb", "metronome", "lago", "openmeter", "stripe", "kafka"}
    for name in d.__all__:
        assert hasattr(d, name)
