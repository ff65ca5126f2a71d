"""The Kubernetes test image's assets: what the Dockerfile copies in must load in the image's Airflow."""

from __future__ import annotations

import yaml

from airflow_image_factory.services.kubernetes_image import build_spec, kubernetes_context


def test_example_dags_load_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(kubernetes_context() / "dags"))
    assert bag.import_errors == {}
    assert {"smoke_example", "smoke_mapped"} <= set(bag.dags)


def test_pod_templates_are_pods():
    templates = list((kubernetes_context() / "pod_templates").glob("*.yaml"))
    assert templates
    for path in templates:
        pod = yaml.safe_load(path.read_text())
        assert pod["kind"] == "Pod" and pod["spec"]["containers"][0]["name"] == "base"


def test_built_from_the_given_prod_image():
    spec = build_spec(prod_image="reg/r/main/prod/python3.11:abc", target="reg/r/main/kubernetes/python3.11:abc")
    assert spec.build_args == {"AIRFLOW_PROD_IMAGE": "reg/r/main/prod/python3.11:abc"}
    assert spec.tags == ("reg/r/main/kubernetes/python3.11:abc",)
    dockerfile = (spec.context / spec.dockerfile).read_text()
    assert "FROM ${AIRFLOW_PROD_IMAGE}" in dockerfile
    assert "COPY --chown=50000:0 dags/ ${AIRFLOW_HOME}/dags/" in dockerfile
    assert "pod_templates/ ${AIRFLOW_HOME}/pod_templates/" in dockerfile
