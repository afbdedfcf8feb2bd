"""Run by the process tests in a fresh interpreter: ``python procs.py MODE JOURNAL_DIR ...``.

lead: take the replay lock, print the result, then wait on stdin (to be killed).
claim: claim the oldest batch, print its name, then wait on stdin (to be killed).
replay OUT INFLIGHT: wait for a line on stdin, then claim/read/"send"/ack every batch,
appending each key to OUT and proving with O_EXCL marker files in INFLIGHT that no
batch is read by two processes at once.
"""

from __future__ import annotations

import os
import sys

import orjson

from meterline.journal import Journal


def main() -> int:
    mode, directory = sys.argv[1], sys.argv[2]
    journal = Journal(directory, min_free_bytes=0)
    journal.open()
    if mode == "lead":
        print(journal.try_lead(), flush=True)
        sys.stdin.read()
        return 0
    if mode == "claim":
        claim = journal.claim(journal.ready()[0])
        print(None if claim is None else claim.name, flush=True)
        sys.stdin.read()
        return 0
    out, inflight = sys.argv[3], sys.argv[4]
    print("ready", flush=True)
    sys.stdin.readline()  # the starting gun, once every replayer is ready
    with open(out, "a", encoding="utf-8") as sent:
        while refs := journal.ready():
            for ref in refs:
                claim = journal.claim(ref)
                if claim is None:
                    continue
                marker = os.path.join(inflight, claim.name)
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    print(f"VIOLATION {claim.name}", file=sent, flush=True)
                    return 3
                for body in journal.read(claim):
                    sent.write(orjson.loads(body)["idempotency_key"] + "\n")
                sent.flush()
                os.unlink(marker)
                journal.ack(claim)
    journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
