"""smoke_deploy's shape: the build params, the PROD latest assets it is scheduled on, the per-version group
with its teardown, and which versions an asset-triggered run deploys (unit tier: parsing only)."""

from __future__ import annotations

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.request import validate_request
from airflow_image_factory.tasks.assets import prod_latest_asset
from airflow_image_factory.tasks.deploy_groups import published_pythons


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.test_dag_integrity import DAGS_DIR

    bag = DagBag(str(DAGS_DIR / "smoke_deploy.py"))
    assert bag.import_errors == {}
    return bag.dags["smoke_deploy"]


def test_params_are_the_build_request(dag):
    for name in ("branch", "python_versions", "registry", "repository", "source_repo", "commit_sha", "naming"):
        assert name in dag.params, name


def test_scheduled_on_any_new_prod_latest(dag):
    settings = load_settings()
    assets = {a.name for a in dag.timetable.asset_condition.objects}
    expected = {prod_latest_asset(settings.registry, settings.repository, settings.branch, py, settings.naming).name
                for py in settings.python_versions}
    assert expected <= assets
    assert type(dag.timetable.asset_condition).__name__ == "AssetAny"


def test_group_builds_prepares_deploys_and_always_tears_down(dag):
    ids = {t.task_id for t in dag.tasks}
    assert {"smoke_deploy.build_kubernetes_image", "smoke_deploy.prepare", "smoke_deploy.deploy",
            "smoke_deploy.teardown"} <= ids
    teardown = dag.task_dict["smoke_deploy.teardown"]
    prepare = dag.task_dict["smoke_deploy.prepare"]
    assert teardown.is_teardown and prepare.is_setup
    assert "smoke_deploy.deploy" in teardown.upstream_task_ids
    assert dag.task_dict["smoke_deploy.deploy"].get_closest_mapped_task_group() is not None


def test_an_asset_event_deploys_only_the_published_version():
    request = validate_request({"registry": "localhost:5000", "python_versions": ["3.11", "3.13"]}, load_settings())
    event = prod_latest_asset("localhost:5000", request.repository, request.branch, "3.13", request.naming).name
    assert published_pythons(request, [event]) == ["3.13"]
    assert published_pythons(request, ["localhost:5000/other/image:latest"]) == []
