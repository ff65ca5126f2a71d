"""Wait for an image in any of several candidate registries, each with its own naming convention.

A downstream run (a fork, ``smoke_deploy``, a DAG that did not build the image) names the image the
convention-neutral way (kind, repository, branch, Python version, tag) and lists the candidates as
``{"registry": ..., "naming": ..., "conn_id": optional}``; :mod:`naming` turns each into that registry's
name. Deferrable by default: the wait runs in the triggerer and holds no worker slot. Returns (XCom) the
registry that holds the image, its naming convention, the reference and digest, for the tasks after it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_image_factory.exceptions import CredentialScopeError, RegistryError
from airflow_image_factory.policy.naming import ImageKind, NamingContext, convention
from airflow_image_factory.policy.settings import DEFAULT_DEBIAN
from airflow_image_factory.tasks.hooks import registry_login
from airflow_image_factory.tasks.operators import fails_at_once
from airflow_image_factory.tasks.triggers import (
    ERROR,
    FOUND,
    TIMEOUT,
    Candidate,
    ImageAvailableTrigger,
    probe_candidates,
)

# The triggerer's own clock check comes first; the scheduler's deferral timeout is only a backstop.
DEFERRAL_TIMEOUT_MARGIN = 300.0


def resolve_candidates(
    candidates: Sequence[Mapping[str, Any]], *, kind: ImageKind, repository: str, branch: str, python: str,
    tag: str | None, debian: str, conn_ids: Mapping[str, tuple[str | None, bool]] | None = None,
) -> list[Candidate]:
    """Name the awaited image in every candidate registry's convention (pure)."""
    if not candidates:
        raise ValueError("candidates: name at least one {registry, naming}")
    resolved = []
    for index, item in enumerate(candidates):
        unknown = set(item) - {"registry", "naming", "conn_id"}
        if unknown or not item.get("registry"):
            raise ValueError(f"candidates[{index}]: expected {{registry, naming, conn_id}}, got {dict(item)!r}")
        registry = str(item["registry"]).lower()
        naming = item.get("naming") or "slash"
        ctx = NamingContext(registry=registry, repository=repository.lower(), branch=branch, python=python,
                            debian=debian)
        image = convention(naming).image(kind, ctx)
        conn_id, explicit = (item["conn_id"], True) if item.get("conn_id") else (conn_ids or {}).get(
            registry, (None, False)
        )
        resolved.append(Candidate(registry, naming, image.path, tag or image.promoted_tag, conn_id, explicit))
    return resolved


class ImageAvailableSensor(BaseSensorOperator):
    """Wait until ``kind`` of ``repository``/``branch``/``python`` with ``tag`` exists in one of ``candidates``.

    ``tag`` defaults to the image's promoted tag (``latest``; ``X.Y-slim-<debian>`` for the Python base).
    ``poke_interval`` and ``timeout`` (seconds) bound the wait: on timeout the task fails with
    :class:`AirflowSensorTimeout` (or is skipped with ``soft_fail``). ``deferrable=False`` pokes in the
    worker instead (``mode="poke"`` or ``"reschedule"``).
    """

    template_fields: Sequence[str] = ("candidates", "kind", "repository", "branch", "python", "tag", "debian")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        candidates: Sequence[Mapping[str, Any]] | Any,
        repository: str,
        branch: str,
        python: str,
        kind: str = ImageKind.PROD.value,
        tag: str | None = None,
        debian: str = DEFAULT_DEBIAN,
        deferrable: bool = True,
        poke_interval: float = 30,
        timeout: float = 3600,
        **kwargs: Any,
    ):
        if kwargs.get("execution_timeout") is None:
            from airflow_image_factory.tasks.operators import step_timeout

            # Airflow also ends a deferral at execution_timeout: past the wait's own bound (which fails
            # with AirflowSensorTimeout, naming the candidates) and its backstop, plus a short run.
            kwargs["execution_timeout"] = timedelta(
                seconds=_seconds(timeout) + DEFERRAL_TIMEOUT_MARGIN) + step_timeout("timeout_short_minutes")
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.candidates = candidates
        self.kind = kind
        self.repository = repository
        self.branch = branch
        self.python = python
        self.tag = tag
        self.debian = debian
        self.deferrable = deferrable

    def _resolved(self) -> list[Candidate]:
        from airflow_image_factory.tasks.hooks import RegistryHook
        from airflow_image_factory.tasks.operators import run_settings

        settings = run_settings()
        registries = {str(c.get("registry", "")).lower() for c in self.candidates}
        # Which docker Connection belongs to which registry is the hooks' rule (settings: registry_connections).
        conn_ids = {}
        for registry in registries:
            hook = RegistryHook(registry, settings=settings)
            conn_ids[registry] = (hook.registry_conn_id, hook.explicit)
        return resolve_candidates(
            self.candidates, kind=ImageKind(self.kind), repository=self.repository, branch=self.branch,
            python=self.python, tag=self.tag, debian=self.debian, conn_ids=conn_ids,
        )

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        candidates = self._resolved()
        self.log.info("Waiting (deferred, up to %.0fs) for any of: %s", self.timeout,
                      ", ".join(c.ref for c in candidates))
        self.defer(
            trigger=ImageAvailableTrigger(
                candidates=[c.to_dict() for c in candidates],
                poke_interval=self.poke_interval,
                deadline=time.time() + self.timeout,
                token_realms=_token_realms(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_TIMEOUT_MARGIN),
        )

    @fails_at_once
    def execute_complete(self, context: Any, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        event = dict(event or {})
        status = event.get("status")
        if status == FOUND:
            self.log.info("%s is in %s (%s naming) as %s", event["ref"], event["registry"], event["naming"],
                          event["digest"])
            return _result(event)
        if status == TIMEOUT:
            raise AirflowSensorTimeout(
                f"none of {event.get('candidates')} appeared within {self.timeout:.0f}s "
                f"({event.get('rounds')} round(s); last errors: {event.get('errors') or 'none'})"
            )
        if status == ERROR:
            if event.get("permanent"):  # the trigger marks a Connection scope error so
                raise CredentialScopeError(f"cannot wait for the image: {event.get('message')}")
            raise RegistryError(f"cannot wait for the image: {event.get('message')}")
        raise RegistryError(f"unexpected trigger event {event!r}")

    @fails_at_once
    def poke(self, context: Any) -> PokeReturnValue:
        candidates = self._resolved()
        credentials = {c.registry: _credentials_now(c) for c in candidates}  # a scope error: no retry
        outcome = probe_candidates(candidates, credentials, token_realms=_token_realms())
        if outcome.found:
            return PokeReturnValue(is_done=True, xcom_value=_result(outcome.found))
        if outcome.all_failed_for_good:
            raise RegistryError("cannot wait for the image: " + "; ".join(outcome.permanent.values()))
        self.log.info("Not yet in any of %s", ", ".join(c.ref for c in candidates))
        return PokeReturnValue(is_done=False)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _token_realms() -> tuple[str, ...]:
    """The hosts a plain-http token realm may get credentials from (the registry_token_realms setting)."""
    from airflow_image_factory.tasks.operators import run_settings

    return tuple(run_settings().registry_token_realms)


def _credentials_now(candidate: Candidate) -> tuple[str, str] | None:
    """In the worker, the lookup the trigger makes in the triggerer (same connection, same rule)."""
    # An empty conn_id names no connection, as in the trigger.
    login = registry_login(candidate.conn_id or None, candidate.registry, explicit=candidate.conn_explicit)
    return login.pair if login else None


def _result(event: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("registry", "naming", "image", "ref", "tag", "digest")
    return {key: event[key] for key in keys}
