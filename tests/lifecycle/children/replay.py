"""A second process on the same journal: ``replay.py URL JOURNAL_DIR`` prints what it replayed."""

from __future__ import annotations

import sys

import meterline

client = meterline.Client(api_key="k", base_url=sys.argv[1], journal_dir=sys.argv[2])
result = client.replay(timeout=20)
print(f"replayed {result.replayed} remaining {result.remaining_batches}", flush=True)
