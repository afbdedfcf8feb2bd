"""A Flask app that reports one usage event per request.

Run it against the reference server (in another terminal: ``meterline serve --port 8787``)::

    export METERLINE_BASE_URL=http://127.0.0.1:8787/v1 METERLINE_API_KEY=dev-key
    gunicorn -c examples/gunicorn.conf.py examples.flask_app:app
    curl -X POST 'http://127.0.0.1:8000/complete?customer=cust_1&tokens=812'

No framework hook is needed: the process-wide client is created from the environment on
the first ``meterline.report()`` of each worker process, its thread starts then, and it is
closed (delivered or journaled within ``shutdown_timeout``) when the worker exits.
``METERLINE_FLUSH_PER_REQUEST=1`` makes each request wait until its event is delivered or
journaled, so that even a ``kill -9`` of the worker right after the response loses nothing.
"""

from __future__ import annotations

import os

from flask import Flask, request

import meterline

app = Flask(__name__)
FLUSH_PER_REQUEST = os.environ.get("METERLINE_FLUSH_PER_REQUEST") == "1"


@app.post("/complete")
def complete() -> dict[str, object]:
    customer = request.args.get("customer", "cust_1")
    tokens = int(request.args.get("tokens", "1"))
    key = meterline.report(customer, "api_call", {"tokens": tokens, "pid": os.getpid()})
    if FLUSH_PER_REQUEST:
        meterline.flush(timeout=2.0)
    return {"idempotency_key": key, "pid": os.getpid()}


@app.get("/health")
def health() -> dict[str, object]:
    return {"ok": True, "pid": os.getpid()}
