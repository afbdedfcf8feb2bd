"""Write-ahead then idle: ``wal_kill.py URL JOURNAL_DIR N KEYS``.

Reports N events with durability="write_ahead", writes their keys to KEYS, prints
"reported" and waits to be killed.
"""

from __future__ import annotations

import sys
import threading

import meterline

url, journal_dir, n_text, keys_file = sys.argv[1:5]
client = meterline.Client(
    api_key="k", base_url=url, journal_dir=journal_dir, durability="write_ahead"
)
keys = [client.report("cust_1", "api_call", {"i": i}) for i in range(int(n_text))]
with open(keys_file, "w") as out:
    out.write("".join(k + "\n" for k in keys))
print("reported", flush=True)
threading.Event().wait()
