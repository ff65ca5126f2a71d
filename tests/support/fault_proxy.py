"""A fault-injecting HTTP reverse proxy in front of a real registry, for retry tests.

Requests pass through to the upstream untouched (the ``Host`` header is kept, so the registry's
``Location`` headers point back at the proxy) unless a queued :class:`Fault` matches: then the
proxy answers with that status (and ``Retry-After``) or drops the connection without a word.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass
class Fault:
    """What to do instead of forwarding. ``times=None`` means forever; ``match(method, path)``
    narrows which requests it hits (default: all)."""

    status: int = 503
    retry_after: str | None = None
    drop: bool = False
    times: int | None = 1
    match: Callable[[str, str], bool] | None = None

    def applies(self, method: str, path: str) -> bool:
        return (self.times is None or self.times > 0) and (self.match is None or self.match(method, path))


@dataclass
class ProxyEvent:
    at: float  # time.monotonic()
    method: str
    path: str
    outcome: str  # "forwarded 200", "fault 503", "dropped"


@dataclass
class FaultProxy:
    upstream: str  # "127.0.0.1:<port>"
    faults: list[Fault] = field(default_factory=list)
    strip_response_headers: frozenset[str] = frozenset()  # lower-case names to remove from answers
    # distribution 2.8 ignores ?n= on tags/list; this makes the proxy paginate it the OCI way
    # (sorted, ?n=&last=, Link: <...>; rel="next") so clients' Link-following can be tested.
    paginate_tags: bool = False
    events: list[ProxyEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None, "start() first"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll
            name="fault-proxy",
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def outcomes(self) -> list[str]:
        with self._lock:
            return [e.outcome for e in self.events]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.applies(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.events.append(ProxyEvent(time.monotonic(), method, path, outcome))


@contextlib.contextmanager
def fault_proxy(
    upstream: str, *faults: Fault, strip_response_headers: Iterable[str] = (), paginate_tags: bool = False
) -> Iterator[FaultProxy]:
    proxy = FaultProxy(
        upstream,
        list(faults),
        strip_response_headers=frozenset(h.lower() for h in strip_response_headers),
        paginate_tags=paginate_tags,
    ).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _paginate_tags(data: bytes, path: str, query: dict[str, list[str]]) -> tuple[bytes, str | None]:
    doc = json.loads(data)
    tags = sorted(doc.get("tags") or [])
    last = query.get("last", [""])[0]
    if last:
        tags = [t for t in tags if t > last]
    n = int(query.get("n", ["0"])[0] or 0)
    link = None
    if n and len(tags) > n:
        tags = tags[:n]
        link = f'<{path}?{urlencode({"last": tags[-1], "n": n})}>; rel="next"'
    doc["tags"] = tags
    return json.dumps(doc).encode(), link


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            method = self.command
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path = self.path.split("?", 1)[0]
            fault = proxy._take_fault(method, path)
            if fault is not None and fault.drop:
                # No status line at all: the client sees the connection close mid-request.
                proxy._record(method, path, "dropped")
                self.close_connection = True
                return
            if fault is not None:
                proxy._record(method, path, f"fault {fault.status}")
                data = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected fault"}]}).encode()
                self.send_response(fault.status)
                if fault.retry_after is not None:
                    self.send_header("Retry-After", fault.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)
                return
            self._forward(method, path, body)

        def _forward(self, method: str, path: str, body: bytes | None) -> None:
            conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                paginate = proxy.paginate_tags and method == "GET" and path.endswith("/tags/list")
                conn.request(method, path if paginate else self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                proxy._record(method, path, f"forwarded {resp.status}")
                link = None
                if paginate and resp.status == 200:
                    data, link = _paginate_tags(data, path, parse_qs(urlsplit(self.path).query))
                self.send_response_only(resp.status, resp.reason)
                skip = _HOP_BY_HOP | proxy.strip_response_headers | {"content-length"}
                for name, value in resp.getheaders():
                    if name.lower() not in skip:
                        self.send_header(name, value)
                if link:
                    self.send_header("Link", link)
                if method != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                elif resp.getheader("Content-Length") is not None:
                    # HEAD answers carry the length of the body they do not send.
                    self.send_header("Content-Length", resp.getheader("Content-Length"))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    return Handler
