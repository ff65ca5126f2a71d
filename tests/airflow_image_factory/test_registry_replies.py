"""A registry reply is not trusted: an endless or dripping body must not hold a task.

Fake registries on loopback (real HTTP servers) answer ``/v2/`` normally and a manifest GET with a
body larger than any registry document, or one byte at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_image_factory.clients.registry import MAX_RESPONSE_BYTES, RegistryClient
from airflow_image_factory.exceptions import RegistryError, RegistryUnavailable


class _Handler(BaseHTTPRequestHandler):
    mode = "huge"

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def do_GET(self) -> None:
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.end_headers()  # no length: the body runs until the server closes
        try:
            if self.mode == "huge":
                chunk = b" " * (1024 * 1024)
                for _ in range(MAX_RESPONSE_BYTES // len(chunk) * 4):
                    self.wfile.write(chunk)
            else:
                for _ in range(600):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should


def _serve(mode: str) -> Iterator[str]:
    handler = type(f"{mode.title()}Handler", (_Handler,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def huge_registry() -> Iterator[str]:
    yield from _serve("huge")


@pytest.fixture
def dripping_registry() -> Iterator[str]:
    yield from _serve("drip")


def test_a_body_larger_than_any_registry_document_is_refused(huge_registry: str) -> None:
    client = RegistryClient(huge_registry, retries=0, timeout=5)
    with pytest.raises(RegistryError, match="more than 16 MiB"):
        client.get_manifest("airflow", "latest")


def test_a_dripping_body_is_cut_at_its_deadline(dripping_registry: str) -> None:
    # Each byte arrives well within the read timeout; only the whole-body deadline can stop it.
    client = RegistryClient(dripping_registry, retries=0, timeout=1)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="too slowly"):
        client.get_manifest("airflow", "latest")
    assert time.monotonic() - started < 10
