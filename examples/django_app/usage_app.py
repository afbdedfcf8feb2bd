"""The Django app whose ``ready()`` configures meterline's process-wide client."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings

import meterline


class UsageConfig(AppConfig):
    name = "usage_app"

    def ready(self) -> None:
        # Creating a client starts no thread and opens nothing, so this is safe in a
        # gunicorn master with --preload: each worker resets it after the fork and starts
        # its own thread on its first report. The exit hook closes it; no signal handler.
        options = {k: v for k, v in getattr(settings, "METERLINE", {}).items() if v is not None}
        meterline.configure(**options)
