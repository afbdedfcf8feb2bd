"""Building a transport and sending through it imports nothing after ``import meterline``.

A fork while another thread is importing a module (``os.fork()`` in the application, or
uWSGI forking from C with the GIL held) leaves that module's import lock held for ever in
the child. Transports are built and used on meterline's worker threads, so everything they
need must already be imported by the time ``import meterline`` returns.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

CHILD = textwrap.dedent(
    """
    import json, sys, threading

    import meterline
    from meterline._transport import HttpxTransport, TransportError
    from meterline.destinations import Orb

    ENV = Orb().envelope
    base = sys.argv[1]
    seen = set(sys.modules)
    new = {}

    def stage(name, work):
        try:
            work()
        except TransportError:
            pass
        new[name] = sorted(set(sys.modules) - seen)
        seen.update(sys.modules)

    def run():
        made = {}
        def build():
            made["t"] = HttpxTransport(
                base + "/ok", "sk-test", timeout=0.5, connect_timeout=0.5, gzip=True, envelope=ENV
            )
            made["bad"] = HttpxTransport(base + "/garbage", "sk-test", timeout=0.5,
                                         connect_timeout=0.5, envelope=ENV)
            made["silent"] = HttpxTransport(base + "/silent", "sk-test", timeout=0.3,
                                            connect_timeout=0.3, envelope=ENV)
            made["refused"] = HttpxTransport(sys.argv[2], "sk-test", timeout=0.3,
                                             connect_timeout=0.3, envelope=ENV)
        stage("construct", build)
        stage("send", lambda: made["t"].send([b'{"n":1}']))
        stage("send again", lambda: made["t"].send([b'{"n":2}'] * 100))
        stage("protocol error", lambda: made["bad"].send([b'{"n":1}']))
        stage("timeout", lambda: made["silent"].send([b'{"n":1}']))
        stage("refused", lambda: made["refused"].send([b'{"n":1}']))
        stage("close", lambda: [t.close() for t in made.values()])

    worker = threading.Thread(target=run)  # where meterline builds and uses transports
    worker.start()
    worker.join()
    print(json.dumps(new))
    """
)


def _serve(conn: socket.socket, stop: threading.Event) -> None:
    with conn:
        while True:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next(
                (
                    int(v)
                    for n, _, v in (x.partition(b":") for x in lines)
                    if n.lower() == b"content-length"
                ),
                0,
            )
            while len(body) < length:
                body += conn.recv(65536)
            path = lines[0].split(b" ")[1]
            if path.endswith(b"/garbage"):
                conn.sendall(b"NOT HTTP\r\n\r\n")
                return
            if path.endswith(b"/silent"):
                stop.wait()
                return
            answer = gzip.compress(b'{"validation_failed":[]}')
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                + answer
            )


@pytest.fixture
def server_url() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve, args=(conn, stop), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()


@pytest.mark.slow
def test_building_and_using_a_transport_imports_nothing_new(server_url):
    """After ``import meterline``, building transports and sending (answers, protocol errors,
    timeouts, refusals) on a worker thread imports no module at all."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{probe.getsockname()[1]}/v1/ingest"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, server_url, refused],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)
    assert list(imported) == [
        "construct",
        "send",
        "send again",
        "protocol error",
        "timeout",
        "refused",
        "close",
    ]
    offenders = {stage: names for stage, names in imported.items() if names}
    assert offenders == {}, f"imported after `import meterline`: {offenders}"
