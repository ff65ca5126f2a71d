"""A fault-injecting HTTP reverse proxy in front of a real registry, for retry tests.

Requests pass through to the upstream untouched (the ``Host`` header is kept, so the registry's
``Location`` headers point back at the proxy) unless a queued :class:`Fault` matches: then the
proxy answers with that status (and ``Retry-After``), drops the connection without a word, drops
it after part of the request body went upstream (a push killed mid-upload), or answers slowly.

Bodies are streamed both ways (``Content-Length`` or chunked uploads, as the Docker engine sends
them), so whole image pushes can go through it. ``random_rate`` adds faults at random (seeded)
on top of the queued ones, for "a few percent of requests fail" runs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
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
    narrows which requests it hits (default: all).

    ``delay`` seconds pass before anything happens; with ``status=None`` the request is then
    forwarded (a slow answer). ``drop_after_bytes`` forwards the request but cuts both connections
    once that many body bytes went upstream (a push killed mid-upload); it is used up (``times``)
    only by a body long enough to be cut, shorter ones pass untouched.
    """

    status: int | None = 503
    retry_after: str | None = None
    drop: bool = False
    times: int | None = 1
    match: Callable[[str, str], bool] | None = None
    delay: float = 0.0
    drop_after_bytes: int | None = None

    @property
    def label(self) -> str:
        if self.drop:
            return "dropped"
        if self.drop_after_bytes is not None:
            return "dropped mid-body"
        if self.status is None:
            return f"slow {self.delay:g}s"
        return f"fault {self.status}"

    def applies(self, method: str, path: str) -> bool:
        return (self.times is None or self.times > 0) and (self.match is None or self.match(method, path))


@dataclass
class ProxyEvent:
    at: float  # time.monotonic()
    method: str
    path: str
    outcome: str  # "forwarded 200", "fault 503", "dropped", "dropped mid-body", "slow 2s forwarded 200"
    body_bytes: int = 0  # request body bytes that went upstream


@dataclass
class FaultProxy:
    upstream: str  # "127.0.0.1:<port>"
    faults: list[Fault] = field(default_factory=list)
    strip_response_headers: frozenset[str] = frozenset()  # lower-case names to remove from answers
    # distribution 2.8 ignores ?n= on tags/list; this makes the proxy paginate it the OCI way
    # (sorted, ?n=&last=, Link: <...>; rel="next") so clients' Link-following can be tested.
    paginate_tags: bool = False
    events: list[ProxyEvent] = field(default_factory=list)
    # On top of the queued faults: each request (that ``random_match`` accepts) meets one of
    # ``random_faults`` with probability ``random_rate``, from a seeded generator.
    random_rate: float = 0.0
    random_faults: tuple[Fault, ...] = ()
    random_match: Callable[[str, str], bool] | None = None
    seed: int = 7

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._rng = random.Random(self.seed)  # noqa: S311 - reproducible test faults

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

    def clear(self) -> None:
        """Forget queued faults and stop random ones (the registry "recovers")."""
        with self._lock:
            self.faults.clear()
            self.random_rate = 0.0

    def faulted(self) -> list[ProxyEvent]:
        """Events where the proxy did not simply forward (slow answers count)."""
        with self._lock:
            return [e for e in self.events if not e.outcome.startswith("forwarded")]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.applies(method, path):
                    if fault.times is not None and fault.drop_after_bytes is None:
                        fault.times -= 1
                    return fault
            if (
                self.random_rate
                and self.random_faults
                and (self.random_match is None or self.random_match(method, path))
                and self._rng.random() < self.random_rate
            ):
                return self._rng.choice(self.random_faults)
        return None

    def _use(self, fault: Fault) -> bool:
        """Use up one ``times`` of a cutting fault; False when a concurrent request used the last."""
        with self._lock:
            if fault.times is None:
                return True
            if fault.times <= 0:
                return False
            fault.times -= 1
            return True

    def _record(self, method: str, path: str, outcome: str, body_bytes: int = 0) -> None:
        with self._lock:
            self.events.append(ProxyEvent(time.monotonic(), method, path, outcome, body_bytes))


@contextlib.contextmanager
def fault_proxy(
    upstream: str,
    *faults: Fault,
    strip_response_headers: Iterable[str] = (),
    paginate_tags: bool = False,
    **options: object,
) -> Iterator[FaultProxy]:
    """``options``: random_rate, random_faults, random_match, seed (see :class:`FaultProxy`)."""
    proxy = FaultProxy(
        upstream,
        list(faults),
        strip_response_headers=frozenset(h.lower() for h in strip_response_headers),
        paginate_tags=paginate_tags,
        **options,  # type: ignore[arg-type]
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


class _Dropped(Exception):
    """The proxy cut the connection on purpose in the middle of a body."""


_PIECE = 256 * 1024


def _body_pieces(rfile, headers) -> Iterator[bytes]:
    """The request body in pieces, de-chunked when it came with ``Transfer-Encoding: chunked``."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        while True:
            line = rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed the connection inside a chunked body")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            while size:
                data = rfile.read(min(size, _PIECE))
                if not data:
                    raise ConnectionError("client closed the connection inside a chunk")
                size -= len(data)
                yield data
            rfile.readline()  # the CRLF after each chunk
    length = int(headers.get("Content-Length") or 0)
    while length:
        data = rfile.read(min(length, _PIECE))
        if not data:
            raise ConnectionError("client closed the connection inside the body")
        length -= len(data)
        yield data


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            method = self.command
            path = self.path.split("?", 1)[0]
            fault = proxy._take_fault(method, path)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.drop:
                # No status line at all: the client sees the connection close mid-request.
                proxy._record(method, path, "dropped")
                self._cut()
                return
            if fault is not None and fault.status is not None and fault.drop_after_bytes is None:
                self._drain_body()
                proxy._record(method, path, fault.label)
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
            slow = fault is not None and fault.status is None and fault.drop_after_bytes is None
            prefix = f"{fault.label} " if slow else ""
            cutter = fault if fault is not None and fault.drop_after_bytes is not None else None
            self._forward(method, path, prefix, cutter)

        def _drain_body(self) -> None:
            # Read what the client sends so it sees our answer, not a reset, on a kept-alive socket.
            try:
                for _ in _body_pieces(self.rfile, self.headers):
                    pass
            except (ConnectionError, ValueError):
                self.close_connection = True

        def _cut(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _forward(self, method: str, path: str, prefix: str, cutter: Fault | None) -> None:
            conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
            sent = 0
            try:
                chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
                has_body = chunked or int(self.headers.get("Content-Length") or 0) > 0
                paginate = proxy.paginate_tags and method == "GET" and path.endswith("/tags/list")
                conn.putrequest(method, path if paginate else self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP | {"content-length", "expect"}:
                        conn.putheader(name, value)
                if chunked:
                    conn.putheader("Transfer-Encoding", "chunked")
                elif has_body:
                    conn.putheader("Content-Length", self.headers["Content-Length"])
                conn.endheaders()
                if has_body:
                    for piece in _body_pieces(self.rfile, self.headers):
                        if cutter is not None and sent + len(piece) > cutter.drop_after_bytes and proxy._use(cutter):
                            piece = piece[: max(0, cutter.drop_after_bytes - sent)]
                            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked and piece else piece)
                            sent += len(piece)
                            raise _Dropped
                        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                        sent += len(piece)
                    if chunked:
                        conn.send(b"0\r\n\r\n")
                resp = conn.getresponse()
                self._answer(method, path, resp, paginate, prefix, sent)
            except _Dropped:
                proxy._record(method, path, "dropped mid-body", sent)
                conn.close()
                self._cut()
            except (ConnectionError, OSError) as exc:
                proxy._record(method, path, f"broken {type(exc).__name__}", sent)
                self._cut()
            finally:
                conn.close()

        def _answer(
            self, method: str, path: str, resp: http.client.HTTPResponse, paginate: bool, prefix: str, sent: int
        ) -> None:
            proxy._record(method, path, f"{prefix}forwarded {resp.status}", sent)
            length = resp.getheader("Content-Length")
            stream = method != "HEAD" and not paginate and length is not None
            data = b""
            link = None
            if method != "HEAD" and not stream:
                data = resp.read()
                if paginate and resp.status == 200:
                    data, link = _paginate_tags(data, path, parse_qs(urlsplit(self.path).query))
            self.send_response_only(resp.status, resp.reason)
            skip = _HOP_BY_HOP | proxy.strip_response_headers | {"content-length"}
            for name, value in resp.getheaders():
                if name.lower() not in skip:
                    self.send_header(name, value)
            if link:
                self.send_header("Link", link)
            if stream or method == "HEAD":
                # HEAD answers carry the length of the body they do not send.
                if length is not None:
                    self.send_header("Content-Length", length)
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if stream:
                while piece := resp.read(_PIECE):
                    self.wfile.write(piece)
            elif method != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    return Handler
