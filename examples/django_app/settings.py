"""A single-file Django project (settings, URLs and the view) that reports usage.

    meterline serve --port 8787 &
    export METERLINE_BASE_URL=http://127.0.0.1:8787/v1 METERLINE_API_KEY=dev-key
    cd examples/django_app
    gunicorn -c ../gunicorn.conf.py wsgi:application     # or: python manage.py runserver
    curl -X POST 'http://127.0.0.1:8000/complete?customer=cust_1&tokens=812'

The meterline client is configured once per process in ``UsageConfig.ready()``
(``usage_app.py``) from the ``METERLINE`` setting; the exit hook closes it.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import meterline

DEBUG = False
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "settings"
INSTALLED_APPS = ["usage_app.UsageConfig"]
MIDDLEWARE: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True

# Read by UsageConfig.ready(); None falls back to METERLINE_* environment variables.
METERLINE = {
    "api_key": os.environ.get("METERLINE_API_KEY"),
    "base_url": os.environ.get("METERLINE_BASE_URL"),
    "journal_dir": os.environ.get("METERLINE_JOURNAL_DIR"),
}


@csrf_exempt
@require_POST
def complete(request: HttpRequest) -> JsonResponse:
    customer = request.GET.get("customer", "cust_1")
    tokens = int(request.GET.get("tokens", "1"))
    key = meterline.report(customer, "api_call", {"tokens": tokens})
    return JsonResponse({"idempotency_key": key, "pid": os.getpid()})


urlpatterns = [path("complete", complete)]
