"""The HTTP side of one registry: where it is (host, scheme), the ``requests`` session with urllib3's
retries and back-off, timeouts, bounded reads of the answers, the registry's error text, traffic stats.

Nothing here knows about credentials beyond keeping a secret out of the errors it writes; auth.py
decides which headers a request carries.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from airflow_image_factory.exceptions import RegistryError, RegistryUnavailable
from airflow_image_factory.policy.reference import DOCKER_HUB_ALIASES

log = logging.getLogger(__package__)  # the package's logger, as before the split into modules

DOCKER_HUB_API = "registry-1.docker.io"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Manifests are at most 4 MiB by the distribution spec; tag lists and catalog pages are paginated.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
BODY_DEADLINE_FACTOR = 4  # a whole body must arrive within this many request timeouts


# --------------------------------------------------------------------------- stats


@dataclass
class RegistryStats:
    """Counts what the client asked of the registry, so tests and benchmarks can assert on traffic.

    ``requests`` is keyed ``"<METHOD> <kind>"`` where kind is one of base, catalog, tags, manifest,
    blob, upload, token, other (e.g. ``"GET manifest"``, ``"POST upload"``). These are logical
    requests; transport-level retries are counted separately in ``retries``.
    """

    requests: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    bytes_received: int = 0
    blob_bytes_sent: int = 0  # bodies sent to blob upload endpoints
    blob_bytes_received: int = 0  # bodies received from blob GETs
    mounts: int = 0  # cross-repository mounts the registry performed (201)
    mount_misses: int = 0  # mounts the registry declined (202)
    retries: int = 0
    token_fetches: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, method: str, kind: str) -> int:
        return self.requests[f"{method.upper()} {kind}"]

    @property
    def blob_bytes(self) -> int:
        return self.blob_bytes_sent + self.blob_bytes_received

    @property
    def manifest_gets(self) -> int:
        return self.count("GET", "manifest")

    @property
    def manifest_heads(self) -> int:
        return self.count("HEAD", "manifest")

    @property
    def manifest_puts(self) -> int:
        return self.count("PUT", "manifest")

    @property
    def blob_gets(self) -> int:
        return self.count("GET", "blob")

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_sent = self.bytes_received = 0
            self.blob_bytes_sent = self.blob_bytes_received = 0
            self.mounts = self.mount_misses = self.retries = self.token_fetches = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
                "blob_bytes_sent": self.blob_bytes_sent,
                "blob_bytes_received": self.blob_bytes_received,
                "mounts": self.mounts,
                "mount_misses": self.mount_misses,
                "retries": self.retries,
                "token_fetches": self.token_fetches,
            }

    def _record(self, method: str, kind: str, sent: int, received: int) -> None:
        with self._lock:
            self.requests[f"{method.upper()} {kind}"] += 1
            self.bytes_sent += sent
            self.bytes_received += received
            if kind == "upload":
                self.blob_bytes_sent += sent
            elif kind == "blob" and method.upper() == "GET":
                self.blob_bytes_received += received

    def _add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


def _kind(path: str) -> str:
    if path.rstrip("/") == "/v2":
        return "base"
    if path.startswith("/v2/_catalog"):
        return "catalog"
    if "/blobs/uploads" in path:
        return "upload"
    if "/blobs/" in path:
        return "blob"
    if "/manifests/" in path:
        return "manifest"
    if path.endswith("/tags/list"):
        return "tags"
    return "other"


# --------------------------------------------------------------------------- retries


class _RegistryRetry(Retry):
    """urllib3 ``Retry`` that caps ``Retry-After`` (older urllib3 2.x cannot) and reports retries."""

    def __init__(self, *args: Any, retry_after_cap: float = 30.0, on_retry: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.retry_after_cap = retry_after_cap
        self.on_retry = on_retry

    def new(self, **kw: Any) -> _RegistryRetry:
        # Retry.new() rebuilds from its own parameter list, which does not know ours.
        new = super().new(**kw)
        new.retry_after_cap = self.retry_after_cap
        new.on_retry = self.on_retry
        return new

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.retry_after_cap)

    def increment(self, *args: Any, **kwargs: Any) -> _RegistryRetry:
        new = super().increment(*args, **kwargs)  # raises MaxRetryError when exhausted
        if self.on_retry is not None:
            self.on_retry()
        return new


# --------------------------------------------------------------------------- the transport


class Transport:
    """Sends requests to one registry (``host[:port]``; ``docker.io`` means ``registry-1.docker.io``).

    ``scheme`` None means http for loopback hosts and https otherwise. ``retries`` bounds the
    retries of each request (connection errors, 429, 500/502/503/504) with exponential ``backoff``
    seconds, each wait - and any ``Retry-After`` - capped at ``max_backoff``. A given ``session``
    is used for its TLS/proxy settings, but gets the retrying adapter mounted on it; one made here
    sends ``user_agent``. ``secret`` (the password) is replaced by ``***`` in every error text.
    ``stats`` counts the traffic. The defaults are RegistryClient's.
    """

    def __init__(
        self,
        host: str,
        *,
        scheme: str | None,
        retries: int,
        backoff: float,
        timeout: float,
        session: requests.Session | None,
        max_backoff: float,
        user_agent: str,
        secret: str | None,
    ):
        host = host.strip().rstrip("/")
        if "://" in host:  # tolerate "https://host" and let it pick the scheme
            given_scheme, _, host = host.partition("://")
            scheme = scheme or given_scheme
        if not host:
            raise ValueError("registry host is empty")
        self.registry = host
        self.api_host = DOCKER_HUB_API if host.lower() in DOCKER_HUB_ALIASES else host
        self.scheme = (scheme or ("http" if _is_loopback(self.api_host) else "https")).lower()
        if self.scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        self.base_url = f"{self.scheme}://{_bracket_ipv6(self.api_host)}"
        self._secret = secret
        self.retries = retries
        self.timeout = timeout
        self.stats = RegistryStats()

        self._owns_session = session is None
        self.session = session or requests.Session()
        if self._owns_session:
            self.session.headers["User-Agent"] = user_agent
        retry = _RegistryRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=retries,
            redirect=10,
            backoff_factor=backoff,
            backoff_max=max_backoff,
            retry_after_cap=max_backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=RETRY_METHODS,
            respect_retry_after_header=True,
            # Hand back the last 5xx/429 so we can raise RegistryUnavailable with its status.
            raise_on_status=False,
            on_retry=lambda: self.stats._add("retries"),
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def send(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        auth: Mapping[str, str],
        allow_redirects: bool,
        kind: str | None = None,
    ) -> requests.Response:
        """One retried request with the ``auth`` headers, its body read (bounded); counted as ``kind``
        (default: from the path). Raises RegistryUnavailable when retries run out."""
        path = urlsplit(url).path
        kind = kind or _kind(path)
        host = urlsplit(url).netloc
        try:
            resp = self.session.request(
                method,
                url,
                params=params,
                headers={**(headers or {}), **auth},
                data=data,
                timeout=self.timeout,
                allow_redirects=allow_redirects,
                stream=True,
            )
            self._read_bounded(resp, method, url)
        except requests.exceptions.RetryError as exc:  # only if a status retry raised anyway
            raise RegistryUnavailable(
                f"registry {host} unavailable: {method} {path} failed after {self.retries + 1} tries: {exc}"
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            raise RegistryUnavailable(
                f"registry {host} unavailable: {method} {path} failed after {self.retries + 1} tries; "
                f"last error: {self.redact(str(reason or exc))}"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"registry {host}: {method} {path} failed: {self.redact(str(exc))}") from exc
        self.stats._record(method, kind, len(data) if data else 0, len(resp.content))
        log.debug("%s %s -> %s (%d bytes)", method, url, resp.status_code, len(resp.content))
        if resp.status_code in RETRY_STATUSES:
            retries = getattr(resp.raw, "retries", None)
            tries = len(retries.history) + 1 if retries is not None else self.retries + 1
            raise RegistryUnavailable(
                f"registry {host} unavailable: {method} {path} failed after {tries} tries; "
                f"last status {resp.status_code}: {self.error_text(resp)}",
                status=resp.status_code,
            )
        return resp

    def _read_bounded(self, resp: requests.Response, method: str, url: str) -> None:
        """Read the body, refusing one larger than any registry document or slower than a deadline.

        This client never downloads layers (blobs are mounted), so every answer is a small JSON
        document; a registry that streams gigabytes or drips a byte at a time must not hold a task.
        """
        deadline = time.monotonic() + self.timeout * BODY_DEADLINE_FACTOR
        body = bytearray()
        try:
            while chunk := self._read_some(resp, method, url):
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise RegistryError(
                        f"registry {urlsplit(url).netloc}: {method} {urlsplit(url).path} answered more than "
                        f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MiB; no registry document is that large"
                    )
                if time.monotonic() > deadline:
                    raise RegistryUnavailable(
                        f"registry {urlsplit(url).netloc}: {method} {urlsplit(url).path} sent its answer too slowly "
                        f"(not done after {self.timeout * BODY_DEADLINE_FACTOR:.0f}s)"
                    )
        finally:
            resp.close()
        resp._content = bytes(body)  # what requests' own .content does after reading the stream

    @staticmethod
    def _read_some(resp: requests.Response, method: str, url: str) -> bytes:
        # read1: what has arrived (a plain read waits for the whole chunk, so a drip would hold it).
        try:
            return resp.raw.read1(64 * 1024, decode_content=True) or b""
        except urllib3.exceptions.HTTPError as exc:
            raise RegistryUnavailable(
                f"registry {urlsplit(url).netloc}: {method} {urlsplit(url).path} broke off its answer: {exc}"
            ) from exc

    def error_text(self, resp: requests.Response) -> str:
        """The registry's ``errors[]`` as ``CODE: message (detail)``, or a short slice of the body."""
        parts: list[str] = []
        try:
            for error in resp.json().get("errors") or []:
                part = f"{error.get('code', '?')}: {error.get('message', '')}".strip()
                detail = error.get("detail")
                if detail:
                    # e.g. the missing blob's digest; dicts are short in practice, cap them anyway.
                    shown = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
                    part += f" ({shown[:160]})"
                if part not in parts:
                    parts.append(part)
        except (ValueError, AttributeError):
            pass
        text = "; ".join(parts) or (resp.text or "").strip()[:200] or resp.reason or "(no body)"
        return self.redact(text)

    def redact(self, text: str) -> str:
        # Defence in depth: nothing we build contains the password, but bodies/errors are foreign text.
        if self._secret:
            text = text.replace(self._secret, "***")
        return text


def endpoint(url: str) -> tuple[str, str, int] | None:
    """``(scheme, hostname, port)`` of an absolute URL, the port made explicit from the scheme's
    default (0 for other schemes); None when there is no host or the port is malformed."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, port if port is not None else DEFAULT_PORTS.get(scheme, 0)


def _is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _bracket_ipv6(host: str) -> str:
    # A bare IPv6 address ("::1") needs brackets in a URL; "host:port" and "[::1]:5000" do not.
    return f"[{host}]" if host.count(":") > 1 and not host.startswith("[") else host
