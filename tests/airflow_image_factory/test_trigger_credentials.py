"""The image wait (sensor and trigger) keeps the credential rules of the hooks: a misconfigured
Connection fails the task at once, and the triggerer gets the token-realm allow-list it has no
settings to read. The Connection lookup is faked (a triggerer's supervisor cannot run here)."""

from __future__ import annotations

import asyncio
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_image_factory.exceptions import CredentialScopeError, RegistryError
from airflow_image_factory.tasks.sensors import ImageAvailableSensor
from airflow_image_factory.tasks.triggers import ERROR, Candidate, ImageAvailableTrigger


def _trigger(**kwargs) -> ImageAvailableTrigger:
    candidate = Candidate("registry.example", "slash", "a/b/prod/python3.11", "latest", "image_factory_registry")
    return ImageAvailableTrigger(candidates=[candidate.to_dict()], poke_interval=1, deadline=time.time() + 30,
                                 **kwargs)


def test_the_trigger_carries_the_token_realm_allow_list():
    _, kwargs = _trigger(token_realms=["auth.example:8080"]).serialize()
    assert ImageAvailableTrigger(**kwargs).token_realms == ("auth.example:8080",)


def test_a_connection_refused_by_the_scope_rule_ends_the_wait_as_permanent(monkeypatch):
    trigger = _trigger()

    async def refuse():
        raise CredentialScopeError("registry connection 'image_factory_registry' has no host")

    monkeypatch.setattr(trigger, "_credentials", refuse)

    async def first_event():
        events = [event async for event in trigger.run()]
        assert len(events) == 1  # one event, then the trigger ends
        return events[0].payload

    event = asyncio.run(first_event())
    assert event["status"] == ERROR and event["permanent"] is True
    assert "image_factory_registry" in event["message"]


def _sensor() -> ImageAvailableSensor:
    return ImageAvailableSensor(task_id="wait", candidates=[{"registry": "registry.example"}],
                                repository="a/b", branch="main", python="3.11")


def test_the_sensor_fails_at_once_on_a_permanent_error_event():
    with pytest.raises(AirflowFailException, match="has no host"):
        _sensor().execute_complete({}, {"status": ERROR, "message": "has no host", "permanent": True})


def test_the_sensor_keeps_other_error_events_retryable():
    with pytest.raises(RegistryError) as info:
        _sensor().execute_complete({}, {"status": ERROR, "message": "refused"})
    assert not isinstance(info.value, AirflowFailException)
