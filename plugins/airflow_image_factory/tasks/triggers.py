"""Wait in the triggerer for an image to appear in any of several registries (seed 001's auto-detection).

The seeds loop forever over ``docker manifest inspect`` / the Packages API; here every round sends one
manifest HEAD per candidate, the wait has a deadline, and the event names the registry that answered.
Candidates arrive already named (the sensor applies :mod:`naming`), so the trigger knows no conventions.
Only connection ids travel through :meth:`serialize`; credentials are read in the triggerer.

:func:`probe_candidates` is the one-round check shared with the sensor's non-deferrable mode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import requests
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_image_factory.clients.registry import DEFAULT_TOKEN_REALMS
from airflow_image_factory.exceptions import (
    CredentialScopeError,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
)
from airflow_image_factory.tasks.hooks import aregistry_login, registry_client

FOUND, TIMEOUT, ERROR = "found", "timeout", "error"
PROBE_RETRIES = 1  # a round is cheap and repeats anyway; do not let one HEAD stall it
PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Candidate:
    """One place the image may be: a registry, the image's path and tag there, and how to log in."""

    registry: str
    naming: str
    path: str
    tag: str
    conn_id: str | None = None
    conn_explicit: bool = False  # the connection was named for this registry: a missing one is an error

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.path}:{self.tag}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(**data)


@dataclass(frozen=True)
class ProbeRound:
    """The outcome of asking every candidate once."""

    found: dict[str, Any] | None
    # registry → why it could not be asked; "permanent" errors (refused credentials, bad requests)
    # will not heal by waiting, "transient" ones (5xx, dropped connections) may.
    permanent: dict[str, str]
    transient: dict[str, str]

    @property
    def all_failed_for_good(self) -> bool:
        return self.found is None and bool(self.permanent) and not self.transient


def probe_candidates(
    candidates: Sequence[Candidate],
    credentials: Mapping[str, tuple[str, str] | None],
    *,
    token_realms: Sequence[str] = DEFAULT_TOKEN_REALMS,
) -> ProbeRound:
    """One manifest HEAD per candidate, in order; the first that has the image wins."""
    permanent: dict[str, str] = {}
    transient: dict[str, str] = {}
    for index, candidate in enumerate(candidates):
        client = registry_client(candidate.registry, credentials.get(candidate.registry), retries=PROBE_RETRIES,
                                 timeout=PROBE_TIMEOUT, token_realms=token_realms)
        try:
            with client:
                digest = client.manifest_digest(candidate.path, candidate.tag)
        except (RegistryUnavailable, requests.RequestException) as exc:
            transient[candidate.registry] = f"{type(exc).__name__}: {exc}"
            continue
        except RegistryAuthError as exc:
            permanent[candidate.registry] = str(exc)
            continue
        except RegistryError as exc:
            bucket = transient if exc.status is None or exc.status >= 500 else permanent
            bucket[candidate.registry] = str(exc)
            continue
        if digest:
            found = {
                "status": FOUND,
                "registry": candidate.registry,
                "naming": candidate.naming,
                "image": f"{candidate.registry}/{candidate.path}",
                "ref": candidate.ref,
                "tag": candidate.tag,
                "digest": digest,
                "candidate": index,
            }
            return ProbeRound(found, permanent, transient)
    return ProbeRound(None, permanent, transient)


class ImageAvailableTrigger(BaseTrigger):
    """Poll the candidates every ``poke_interval`` seconds until one holds the image or ``deadline`` passes.

    ``deadline`` is an absolute epoch time, so a trigger moved to another triggerer keeps the original
    end. Yields exactly one event: ``found`` (which registry, digest), ``timeout``, or ``error`` when
    every candidate failed in a way waiting will not fix (credentials refused, bad request).
    """

    def __init__(
        self,
        *,
        candidates: Sequence[Mapping[str, Any]],
        poke_interval: float,
        deadline: float,
        token_realms: Sequence[str] = DEFAULT_TOKEN_REALMS,
    ):
        super().__init__()
        self.candidates = [Candidate.from_dict(c) for c in candidates]
        self.poke_interval = float(poke_interval)
        self.deadline = float(deadline)
        # The triggerer has no settings: the worker hands it the registry_token_realms setting.
        self.token_realms = tuple(token_realms)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "candidates": [c.to_dict() for c in self.candidates],
                "poke_interval": self.poke_interval,
                "deadline": self.deadline,
                "token_realms": list(self.token_realms),
            },
        )

    async def _credentials(self) -> dict[str, tuple[str, str] | None]:
        found: dict[str, tuple[str, str] | None] = {}
        for candidate in self.candidates:
            if candidate.registry in found or not candidate.conn_id:
                found.setdefault(candidate.registry, None)
                continue
            login = await aregistry_login(candidate.conn_id, candidate.registry, explicit=candidate.conn_explicit)
            found[candidate.registry] = login.pair if login else None
        return found

    async def run(self) -> AsyncIterator[TriggerEvent]:
        names = ", ".join(c.ref for c in self.candidates)
        try:
            credentials = await self._credentials()
        except Exception as exc:
            # A misconfigured Connection (CredentialScopeError) does not mend by waiting or retrying.
            yield TriggerEvent({"status": ERROR, "message": f"cannot read registry credentials: {exc}",
                                "permanent": isinstance(exc, CredentialScopeError)})
            return
        rounds = 0
        while True:
            rounds += 1
            # The registry client is synchronous (requests); a thread keeps the event loop free.
            outcome = await asyncio.to_thread(
                probe_candidates, self.candidates, credentials, token_realms=self.token_realms
            )
            if outcome.found:
                self.log.info("Found %s after %d round(s)", outcome.found["ref"], rounds)
                yield TriggerEvent({**outcome.found, "rounds": rounds})
                return
            if outcome.all_failed_for_good:
                yield TriggerEvent({"status": ERROR, "rounds": rounds, "candidates": names,
                                    "message": "; ".join(f"{r}: {m}" for r, m in outcome.permanent.items())})
                return
            remaining = self.deadline - time.time()
            if remaining <= 0:
                yield TriggerEvent({"status": TIMEOUT, "rounds": rounds, "candidates": names,
                                    "errors": {**outcome.permanent, **outcome.transient}})
                return
            self.log.info("Not yet in any of %s (round %d%s); next look in %.0fs", names, rounds,
                          f", errors: {outcome.permanent | outcome.transient}" if outcome.permanent or
                          outcome.transient else "", min(self.poke_interval, remaining))
            await asyncio.sleep(min(self.poke_interval, remaining))
