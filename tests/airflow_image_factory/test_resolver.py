"""The eager resolution through uv, for real against the package index (no image, no container)."""

import os

import pytest

from airflow_image_factory.clients.resolver import airflow_requirement, resolve_newest, uv_platform
from airflow_image_factory.exceptions import DependencyResolutionFailed


def test_airflow_requirement():
    assert airflow_requirement("3.3.2", "postgres, mysql") == "apache-airflow[postgres,mysql]==3.3.2"
    assert airflow_requirement("3.3.2", "") == "apache-airflow==3.3.2"


def test_platforms():
    assert uv_platform("x86_64") == "x86_64-unknown-linux-gnu"
    assert uv_platform("arm64") == "aarch64-unknown-linux-gnu"
    with pytest.raises(DependencyResolutionFailed, match="s390x"):
        uv_platform("s390x")


def test_resolution_is_for_the_target_python_not_the_workers():
    # tomli is required by pytest only before Python 3.11; the worker's own Python does not matter.
    old = resolve_newest("pytest==8.3.5", python="3.10")
    new = resolve_newest("pytest==8.3.5", python="3.13")
    assert old["pytest"] == new["pytest"] == "8.3.5"
    assert "tomli" in old and "tomli" not in new


def test_an_unsatisfiable_requirement_is_a_clear_error():
    with pytest.raises(DependencyResolutionFailed, match="no-such-package-image-factory"):
        resolve_newest("no-such-package-image-factory==1.0", python="3.11")


def test_a_resolution_as_the_index_stood_at_a_time_ignores_later_uploads():
    # celery 5.7.0 was uploaded on 2026-11-05; at Airflow 3.3.2's release the newest was 5.6.3.
    assert resolve_newest("celery<6", python="3.11", uploaded_before="2026-09-17T08:40:00Z")["celery"] == "5.6.3"
    assert resolve_newest("celery<6", python="3.11", uploaded_before="2026-11-06T00:00:00Z")["celery"] == "5.7.0"


def test_uv_is_looked_up_once_and_the_same_from_every_thread():
    from concurrent.futures import ThreadPoolExecutor

    from airflow_image_factory.clients.resolver import uv_bin

    with ThreadPoolExecutor(8) as pool:
        found = set(pool.map(lambda _: uv_bin(), range(16)))
    assert len(found) == 1
    (path,) = found
    assert os.access(path, os.X_OK), path
