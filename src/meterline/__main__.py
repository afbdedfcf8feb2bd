"""``python -m meterline [command]`` is the ``meterline`` command."""

from __future__ import annotations

import sys

from meterline.cli import main

if __name__ == "__main__":
    sys.exit(main())
