"""gunicorn settings for an app that reports with meterline; no server hook is needed.

    gunicorn -c examples/gunicorn.conf.py examples.flask_app:app

Why no hooks: each worker creates its own client on its first report (or, with
``--preload``, inherits an unstarted one that ``os.register_at_fork`` resets), and
gunicorn turns SIGTERM (graceful stop, ``max_requests`` restarts) and SIGABRT (worker
timeout) into a normal interpreter exit, so meterline's exit hook delivers or journals
what is queued within ``shutdown_timeout``. The one rule: let gunicorn wait for that,
i.e. keep ``graceful_timeout`` above meterline's ``shutdown_timeout`` (5 s by default).
A worker killed with SIGKILL (OOM killer, ``timeout`` escalation) runs no hook at all:
use ``durability="write_ahead"`` (``METERLINE_DURABILITY=write_ahead``) or
``meterline.flush()`` before answering requests whose events must survive that.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")  # or "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "1"))  # above 1, gunicorn uses gthread
preload_app = os.environ.get("GUNICORN_PRELOAD", "0") == "1"  # safe either way
graceful_timeout = 30  # must stay above meterline's shutdown_timeout
timeout = 30
