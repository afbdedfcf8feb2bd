"""HTTPS endpoints: the certificate is verified against SSL_CERT_FILE (else certifi's roots),
and a plain-HTTP endpoint loads no certificates at all (about 20 ms of CPU per client)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meterline._connection import pool
from meterline._deadline import DeadlineBackend
from meterline._transport import HttpxTransport, TransportError
from meterline.destinations import Orb

trustme = pytest.importorskip("trustme")

KEY = "sk-test-tls-0123456789"
ANSWER = b'{"validation_failed": []}'


class _Ingest(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def ca() -> object:
    return trustme.CA()


@pytest.fixture
def https_url(ca: object) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ingest)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)  # type: ignore[attr-defined]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v1/ingest"
    finally:
        server.shutdown()
        server.server_close()


def _transport(url: str) -> HttpxTransport:
    return HttpxTransport(url, KEY, timeout=5.0, connect_timeout=2.0, envelope=Orb().envelope)


def test_a_certificate_from_ssl_cert_file_is_trusted(
    ca: object, https_url: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"  # type: ignore[operator]
    ca.cert_pem.write_to_path(str(bundle))  # type: ignore[attr-defined]
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    transport = _transport(https_url)
    try:
        answer = transport.send([b'{"idempotency_key":"k"}'])
    finally:
        transport.close()
    assert answer.status == 200
    assert answer.body == ANSWER


def test_an_unknown_certificate_is_refused_and_the_key_not_shown(
    https_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    transport = _transport(https_url)
    try:
        with pytest.raises(TransportError) as caught:
            transport.send([b'{"idempotency_key":"k"}'])
    finally:
        transport.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value) or "certificate" in str(caught.value)
    assert KEY not in str(caught.value)


def test_only_a_plain_http_endpoint_goes_without_certificates() -> None:
    import httpx

    plain = pool(httpx.URL("http://127.0.0.1:9/v1/ingest"), DeadlineBackend())
    secure = pool(httpx.URL("https://127.0.0.1:9/v1/ingest"), DeadlineBackend())
    session = pool(httpx.URL("http://127.0.0.1:9/v1/ingest"), DeadlineBackend(), other_origins=True)
    assert plain._ssl_context is None  # httpcore would make its own if it ever needed one
    assert isinstance(secure._ssl_context, ssl.SSLContext)
    assert isinstance(session._ssl_context, ssl.SSLContext)
