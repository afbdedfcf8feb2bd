"""Report usage from Celery tasks running in the prefork pool.

    meterline serve --port 8787 &
    export METERLINE_BASE_URL=http://127.0.0.1:8787/v1 METERLINE_API_KEY=dev-key
    celery -A examples.celery_task worker --pool=prefork --concurrency=2
    python -c "from examples.celery_task import complete as c; print(c.delay('cust_1', 8).get())"

Pool children are forked from the worker; meterline resets its state in each child, whose
client starts its own thread on its first report. A pool child does not leave through
the interpreter's normal exit (billiard ends it with ``os._exit``, and a warm shutdown
sends SIGTERM to children still alive), so meterline's exit hook would not run there: the
two signal handlers below (two hooks are needed here, unlike gunicorn) turn that SIGTERM
into an exit and close the client in ``worker_process_shutdown``, delivering or journaling
within ``shutdown_timeout``. For tasks whose events must be settled before the task
returns, call ``meterline.flush()`` at the end of the task.

The broker defaults to kombu's filesystem transport under ``CELERY_DATA_DIR`` so that the
example runs without a broker server; set ``CELERY_BROKER_URL`` for Redis or RabbitMQ.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

import meterline

app = Celery("celery_task")
if os.environ.get("CELERY_BROKER_URL"):
    app.conf.broker_url = os.environ["CELERY_BROKER_URL"]
else:
    data = Path(os.environ.get("CELERY_DATA_DIR", ".celery"))
    for sub in ("queue", "processed", "results", "control"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    app.conf.broker_url = "filesystem://"
    app.conf.broker_transport_options = {
        "data_folder_in": str(data / "queue"),
        "data_folder_out": str(data / "queue"),
        "processed_folder": str(data / "processed"),
        "control_folder": str(data / "control"),  # else ./control in the working directory
        "store_processed": False,
    }
    app.conf.result_backend = f"file://{(data / 'results').resolve()}"
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False


@app.task
def complete(customer: str, tokens: int) -> str:
    """One unit of billable work: report it and return the event's idempotency key."""
    return meterline.report(customer, "api_call", {"tokens": tokens, "pid": os.getpid()})


@worker_process_init.connect
def exit_on_sigterm(**kwargs: Any) -> None:
    """Runs in each pool child after the fork. At a warm shutdown the pool ends children
    that are still alive with SIGTERM, whose default action kills them on the spot; this
    turns it into an exit that runs ``worker_process_shutdown`` below."""
    meterline.install_sigterm_handler()


@worker_process_shutdown.connect
def close_meterline(**kwargs: Any) -> None:
    """Runs in each pool child just before it exits: deliver or journal what it queued."""
    meterline.close()
