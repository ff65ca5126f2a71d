"""Which of a run's images may leave the engine: only those the registry holds byte for byte."""

from __future__ import annotations

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import SettingsError
from airflow_image_factory.policy.housekeeping import droppable_refs, keep_bytes, pushed_digests
from airflow_image_factory.policy.naming import image_set

SHA = "cd27124534b46c9688a1d89e75fcd137ab5137e3"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def images(registry="localhost:5000", naming="slash"):
    return image_set(registry=registry, repository="apache/airflow", branch="main", python="3.11",
                     debian="bookworm", naming=naming, python_base_source="docker.io/library/python")


def test_droppable_refs_are_the_runs_pushed_images_and_never_the_python_base():
    refs = droppable_refs(images(), SHA)
    assert refs == [
        f"localhost:5000/apache/airflow/main/ci/python3.11:{SHA}",
        f"localhost:5000/apache/airflow/main/ci-manifest/python3.11:{SHA}",
        f"localhost:5000/apache/airflow/main/prod-build/python3.11:{SHA}",
        f"localhost:5000/apache/airflow/main/prod/python3.11:{SHA}",
        f"localhost:5000/apache/airflow/main/prod-slim-build/python3.11:{SHA}",
        f"localhost:5000/apache/airflow/main/prod-slim/python3.11:{SHA}",
    ]
    assert not any("/python:" in ref for ref in refs)  # later builds start FROM the base


def test_droppable_refs_follow_the_naming_convention():
    refs = droppable_refs(images(registry="ghcr.io", naming="ghcr-v2"), SHA)
    assert all(ref.startswith("ghcr.io/apache/airflow-main-python3.11-") and ref.endswith(f":{SHA}") for ref in refs)
    assert len(set(refs)) == 6


def test_pushed_digests_only_count_the_refs_own_repository():
    ref = f"localhost:5000/apache/airflow/main/prod/python3.11:{SHA}"
    repo_digests = [
        f"localhost:5000/apache/airflow/main/prod/python3.11@{D1}",
        f"localhost:5000/apache/airflow/other/prod/python3.11@{D2}",  # another branch: says nothing
        f"127.0.0.1:5000/apache/airflow/main/prod/python3.11@{D2}",  # another host spelling: another registry
    ]
    assert pushed_digests(ref, repo_digests) == [D1]


def test_pushed_digests_normalise_docker_hub_names():
    # the engine writes Docker Hub names short (apache/airflow@...), the naming writes them in full
    assert pushed_digests(f"docker.io/apache/airflow:{SHA}", [f"apache/airflow@{D1}"]) == [D1]
    assert pushed_digests(f"index.docker.io/library/python:{SHA}", [f"python@{D2}"]) == [D2]


@pytest.mark.parametrize("repo_digests", [[], ["<none>@<none>"], ["not a reference at all"],
                                          [f"localhost:5000/apache/airflow/main/prod/python3.11:{SHA}"]])
def test_an_image_never_pushed_has_no_digest_to_check(repo_digests):
    # a tag (no @digest) or garbage is not evidence the registry holds the image
    assert pushed_digests(f"localhost:5000/apache/airflow/main/prod/python3.11:{SHA}", repo_digests) == []


def test_keep_bytes():
    assert keep_bytes(-1) is None  # the engine's own garbage collection decides
    assert keep_bytes(0) == 0
    assert keep_bytes(20) == 20 * 1024**3


def test_a_negative_cache_size_is_refused_naming_the_setting():
    with pytest.raises(SettingsError, match="build_cache_keep_gb"):
        load_settings(env={"IMAGE_FACTORY_BUILD_CACHE_KEEP_GB": "-5"})
    with pytest.raises(SettingsError, match="remove_pushed_images"):
        load_settings(env={"IMAGE_FACTORY_REMOVE_PUSHED_IMAGES": "sometimes"})
    assert load_settings(env={"IMAGE_FACTORY_BUILD_CACHE_KEEP_GB": "3"}).build_cache_keep_gb == 3
