"""Errors no retry can mend fail a task at once, one way everywhere: ``operators.fail_at_once``, applied by
``fails_at_once`` to every @task body (and by ImageFactoryOperator to every ``execute``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_image_factory.exceptions import BranchNotFound, ImageFactoryError, PermanentError, RegistryError
from airflow_image_factory.tasks.operators import fails_at_once


@task(retries=3)
@fails_at_once
def _body(error: BaseException | None = None) -> str:
    if error is not None:
        raise error
    return "done"


def _run(error: BaseException | None) -> str:
    """The task as Airflow's worker runs it: the operator's execute calls the decorated body."""
    with DAG("permanent_errors"):
        operator = _body(error).operator
    return operator.execute(context={"ti": SimpleNamespace(), "outlet_events": {}, "inlet_events": {}})


def test_a_permanent_domain_error_in_a_task_body_fails_at_once_naming_its_field():
    error = BranchNotFound("no such branch 'nope'")
    assert error.permanent
    with pytest.raises(AirflowFailException, match=r"^branch: no such branch 'nope'$") as info:
        _run(error)
    assert info.value.__cause__ is error


@pytest.mark.parametrize(
    "error", [RegistryError("registry answered 500"), ImageFactoryError("transient"), ValueError("a bug")],
    ids=["registry", "domain", "other"],
)
def test_an_error_that_is_not_permanent_is_raised_as_it_is_so_the_task_retries(error):
    assert not getattr(error, "permanent", False)
    with pytest.raises(type(error)) as info:
        _run(error)
    assert info.value is error
    assert not isinstance(info.value, AirflowFailException)


def test_a_task_body_that_succeeds_is_untouched():
    assert _run(None) == "done"


def test_a_packaged_task_maps_a_permanent_error_the_same_way(monkeypatch):
    import airflow_image_factory.tasks.groups as tasks
    from airflow_image_factory.clients.settings_loader import load_settings

    monkeypatch.setattr(tasks, "run_settings", lambda: load_settings(env={}))
    monkeypatch.setattr(tasks, "branch_head", lambda *args, **kwargs: None)
    request = tasks.validate_request({"branch": "nope"}, load_settings(env={})).to_dict()
    with pytest.raises(AirflowFailException, match=r"^branch: 'nope' does not exist in ") as info:
        tasks.resolve_sha.function(request)
    assert isinstance(info.value.__cause__, BranchNotFound)


def test_operators_outside_the_build_flow_fail_at_once_too(monkeypatch):
    """retag, release and the sensor are not ImageFactoryOperators: each decorates its own entry points."""
    from airflow_image_factory.tasks.release import PublishReleaseOperator
    from airflow_image_factory.tasks.retag import RetagImagesOperator
    from airflow_image_factory.tasks.sensors import ImageAvailableSensor

    for method in (RetagImagesOperator.execute, PublishReleaseOperator.execute,
                   ImageAvailableSensor.poke, ImageAvailableSensor.execute_complete):
        assert getattr(method, "__wrapped__", None) is not None, method.__qualname__


def test_a_release_with_an_untested_python_fails_at_once_naming_it():
    from airflow_image_factory.tasks.release import PublishReleaseOperator

    operator = PublishReleaseOperator(
        task_id="publish", staged=[{"python": "3.11", "digests": {"regular": "sha256:" + "a" * 64}}],
        release_request={"version": "3.3.2", "python_versions": ["3.11", "3.13"], "default_python": "3.11",
                         "registry": "registry.example", "repository": "r/airflow", "cache_branch": "main",
                         "constraints_url": ""},
    )
    with pytest.raises(AirflowFailException, match=r"no tested image for Python 3\.13 \(regular\): "):
        operator.execute(context={})


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


@pytest.mark.parametrize("error_class", sorted(set(_subclasses(PermanentError)), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_permanent_error_fails_at_once_naming_its_field(error_class):
    # One base class, one mapping: a new PermanentError needs no change in the tasks layer.
    error = error_class.__new__(error_class)
    Exception.__init__(error, "it stays broken")
    with pytest.raises(AirflowFailException) as info:
        _run(error)
    assert info.value.__cause__ is error
    assert str(info.value) == (f"{error.field}: it stays broken" if error.field else "it stays broken")


def test_only_permanent_errors_say_they_are_permanent():
    for error_class in _subclasses(ImageFactoryError):
        assert error_class.permanent == issubclass(error_class, PermanentError), error_class.__name__
