"""``python -m meterline.server [options]`` is ``meterline serve [options]``."""

from __future__ import annotations

import sys

from meterline.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
