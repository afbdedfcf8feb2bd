"""A batch job: report usage, then simply return; the exit hook delivers or journals it.

    meterline serve --port 8787 &
    METERLINE_BASE_URL=http://127.0.0.1:8787/v1 METERLINE_API_KEY=dev-key \\
        python examples/script.py 1000

No ``flush()`` or ``close()`` is needed: at interpreter exit meterline closes every client
within ``shutdown_timeout`` (5 s by default, ``METERLINE_SHUTDOWN_TIMEOUT``), sending what
it can and journaling the rest to ``METERLINE_JOURNAL_DIR``; the next process with the same
journal (or ``client.replay()``) delivers it. ``install_sigterm_handler()`` makes
``kill PID`` (SIGTERM) take that same path instead of killing the script outright.
"""

from __future__ import annotations

import sys

import meterline


def main(n: int) -> None:
    meterline.install_sigterm_handler()
    for i in range(n):
        meterline.report("cust_1", "rows_processed", {"rows": 100, "batch": i})
    print(f"reported {n} events", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
