"""Real servers: gunicorn (sync, gthread, --preload, SIGTERM, SIGKILL), uvicorn, Celery."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from meterline.testing import wait_until
from tests.lifecycle.helpers import (
    CHILDREN,
    EXAMPLES,
    Proc,
    child_env,
    ready_events,
    tool,
)
from tests.support.fault_server import FaultServer

pytestmark = pytest.mark.slow
GUNICORN = tool("gunicorn")
UVICORN = tool("uvicorn")
CELERY = tool("celery")


def meterline_env(server: FaultServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return child_env(
        METERLINE_API_KEY="k",
        METERLINE_BASE_URL=server.url,
        METERLINE_JOURNAL_DIR=tmp_path / "j",
        METERLINE_FLUSH_INTERVAL="30",  # nothing is sent by the timer: only by the exit path
        XDG_RUNTIME_DIR=tmp_path,  # gunicorn >= 25.1 puts its control socket there
        **extra,
    )


def start_gunicorn(
    procs: list[Proc],
    env: dict[str, str],
    app: str = "examples.flask_app:app",
    *,
    worker_class: str = "sync",
    preload: bool = False,
    cwd: Path | None = None,
) -> tuple[Proc, str]:
    if GUNICORN is None:
        pytest.skip("gunicorn is not installed")
    env = {
        **env,
        "GUNICORN_BIND": "127.0.0.1:0",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_WORKER_CLASS": worker_class,
        "GUNICORN_THREADS": "4" if worker_class == "gthread" else "1",
        "GUNICORN_PRELOAD": "1" if preload else "0",
    }
    proc = Proc(
        [GUNICORN, "-c", EXAMPLES / "gunicorn.conf.py", app],
        env=env,
        cwd=cwd,
        merge_stderr=True,
    )
    procs.append(proc)
    match = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", proc.expect("Listening at:"))
    assert match is not None
    proc.expect("Booting worker")
    proc.expect("Booting worker")
    return proc, match.group(1)


def post_many(base: str, n: int, path: str = "/complete") -> list[dict[str, object]]:
    """``n`` requests, each reporting one event; returns the JSON answers."""
    answers = []
    with httpx.Client(base_url=base, timeout=10) as http:
        for i in range(n):
            response = http.post(path, params={"customer": f"cust_{i % 3}", "tokens": i})
            response.raise_for_status()
            answers.append(response.json())
    return answers


def assert_each_once(server: FaultServer, keys: set[str]) -> None:
    assert keys <= server.keys(), f"missing {len(keys - server.keys())} of {len(keys)}"
    assert all(server.deliveries[k] == 1 for k in keys)


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_gunicorn_graceful_sigterm_delivers_every_request_event_once(
    server: FaultServer, tmp_path: Path, procs, worker_class: str, preload: bool
):
    """Two gunicorn workers (sync or gthread, with or without --preload) answer 40
    requests; a graceful SIGTERM of the master delivers each request's event exactly once,
    through each worker's exit hook (the timer never fired)."""
    proc, base = start_gunicorn(
        procs, meterline_env(server, tmp_path), worker_class=worker_class, preload=preload
    )
    answers = post_many(base, 40)
    assert server.count() == 0
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.output()
    assert_each_once(server, {str(a["idempotency_key"]) for a in answers})
    assert server.count() == 40


def test_gunicorn_worker_sigkill_loses_nothing_with_a_flush_per_request(
    server: FaultServer, tmp_path: Path, procs
):
    """With meterline.flush() before each answer, SIGKILL of a worker mid-run loses no
    event of an answered request, and gunicorn's replacement worker carries on."""
    env = meterline_env(server, tmp_path, METERLINE_FLUSH_PER_REQUEST="1")
    proc, base = start_gunicorn(procs, env)
    answers = post_many(base, 20)
    victim = int(str(answers[-1]["pid"]))
    signal_pid(victim, signal.SIGKILL)
    proc.expect("Booting worker")  # the replacement
    answers += post_many(base, 20)
    assert_each_once(server, {str(a["idempotency_key"]) for a in answers})
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.output()
    assert server.count() == 40


def test_gunicorn_worker_sigkill_in_write_ahead_mode_keeps_journaled_events(
    server: FaultServer, tmp_path: Path, procs
):
    """durability="write_ahead" during an outage: once the request events are on disk, a
    worker's SIGKILL loses none of them; after recovery, a replay delivers each once."""
    server.outage_status = 503
    env = meterline_env(server, tmp_path, METERLINE_DURABILITY="write_ahead")
    proc, base = start_gunicorn(procs, env)
    answers = post_many(base, 30)
    keys = {str(a["idempotency_key"]) for a in answers}
    wait_until(lambda: ready_events(tmp_path / "j") >= 30, timeout=20)
    for pid in {int(str(a["pid"])) for a in answers}:
        signal_pid(pid, signal.SIGKILL)
    proc.expect("Booting worker")
    server.outage_status = None
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.output()
    replay = Proc([sys.executable, CHILDREN / "replay.py", server.url, tmp_path / "j"])
    procs.append(replay)
    assert replay.expect("replayed").endswith("remaining 0")
    assert keys <= server.keys()
    assert server.count() == 30


def test_django_example_under_gunicorn_preload(server: FaultServer, tmp_path: Path, procs):
    """The Django example (client configured in AppConfig.ready) under gunicorn --preload:
    a graceful stop delivers every request's event once."""
    pytest.importorskip("django")
    proc, base = start_gunicorn(
        procs,
        meterline_env(server, tmp_path),
        "wsgi:application",
        preload=True,
        cwd=EXAMPLES / "django_app",
    )
    answers = post_many(base, 20)
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.output()
    assert_each_once(server, {str(a["idempotency_key"]) for a in answers})


def test_uvicorn_fastapi_lifespan_closes_on_sigterm(server: FaultServer, tmp_path: Path, procs):
    """The FastAPI example under uvicorn: SIGTERM runs the lifespan's aclose(), which
    delivers every event once; aflush() settles an event before its answer."""
    if UVICORN is None:
        pytest.skip("uvicorn is not installed")
    pytest.importorskip("fastapi")
    proc = Proc(
        [UVICORN, "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", "0"],
        env=meterline_env(server, tmp_path),
        merge_stderr=True,
    )
    procs.append(proc)
    match = re.search(r"(http://127\.0\.0\.1:\d+)", proc.expect("Uvicorn running on"))
    assert match is not None
    answers = post_many(match.group(1), 30)
    flushed = post_many(match.group(1), 1, "/complete-and-flush")[0]
    assert flushed["settled"] is True
    assert {str(flushed["idempotency_key"])} <= server.keys()
    proc.signal(signal.SIGTERM)
    # uvicorn >= 0.29 re-raises the signal after its shutdown: -15 is a clean exit too.
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM), proc.output()
    assert any(line.startswith("meterline closed: ") for line in proc.lines), proc.output()
    assert_each_once(server, {str(a["idempotency_key"]) for a in answers})
    assert server.count() == 31


def test_celery_prefork_pool_delivers_at_warm_shutdown(server: FaultServer, tmp_path: Path, procs):
    """The Celery example's prefork pool (kombu's filesystem broker, no broker server):
    after a warm shutdown (SIGTERM), every task's event has arrived exactly once."""
    if CELERY is None:
        pytest.skip("celery is not installed")
    env = meterline_env(server, tmp_path, CELERY_DATA_DIR=str(tmp_path / "celery"))
    worker = Proc(
        [
            CELERY,
            "-A",
            "examples.celery_task",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=INFO",
        ],
        env=env,
        merge_stderr=True,
    )
    procs.append(worker)
    worker.expect(" ready.", timeout=30)
    producer = Proc(
        [
            sys.executable,
            "-c",
            "from examples.celery_task import complete\n"
            "results = [complete.delay('cust_1', i) for i in range(20)]\n"
            "print('keys', *[r.get(timeout=30) for r in results], flush=True)\n",
        ],
        env=env,
    )
    procs.append(producer)
    keys = set(producer.expect("keys ", timeout=40).split()[1:])
    assert producer.wait() == 0
    assert len(keys) == 20
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output()
    assert_each_once(server, keys)


def signal_pid(pid: int, signum: int) -> None:
    import os

    os.kill(pid, signum)
