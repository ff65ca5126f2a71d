"""services.probe without an engine: a small fake engine shows what a probe builds (one layer over the
published CI image, the CA bundle only as a secret), what counts as a failed probe (the tests, nothing
else) and that the probe image never stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_image_factory.clients.engine import RunResult
from airflow_image_factory.clients.settings_loader import include_dir
from airflow_image_factory.exceptions import BuildFailed, EngineError, ProbeNotInstallable
from airflow_image_factory.policy.image_contract import ImageCheck
from airflow_image_factory.services.probe import PROBE_DOCKERFILE, Probe, run_probe
from tests.services.fakes import FakeProbeEngine

ROOT = include_dir().parent
CI = "localhost:5000/apache/airflow/main/ci/python3.11@sha256:" + "1" * 64
PROBE = Probe(ci_image=CI, tag="local-airflow-ci-probe/main/python3.11:probe-1",
              installs={"celery": "5.7.0"}, constraints={"celery": "5.7.0", "kombu": "5.5.0"})
CHECKS = [ImageCheck(name="tests", command=("bash", "-c", "pytest -q /opt/airflow/verify"))]


def _probe(engine, **kw):
    return run_probe(engine, PROBE, CHECKS, root=ROOT, secrets=kw.get("secrets", {}), on_line=lambda line: None,
                     say=lambda line: None)


def test_a_probe_is_one_install_layer_over_the_published_ci_image_and_its_tests_pass():
    engine = FakeProbeEngine()
    assert _probe(engine, secrets={"extra_ca": "/etc/ca.pem"}) == {
        "passed": True, "checks": [{"check": "tests", "passed": True, "exit_code": 0}], "output_tail": ""}
    [spec] = engine.built
    assert spec.build_args == {"CI_IMAGE": CI} and spec.tags == (PROBE.tag,) and spec.dockerfile == PROBE_DOCKERFILE
    assert spec.secrets == {"extra_ca": "/etc/ca.pem"} and not spec.inline_cache
    assert engine.contexts["probe/requirements.txt"] == "celery==5.7.0\n"
    assert engine.contexts["probe/constraints.txt"] == "celery==5.7.0\nkombu==5.5.0\n"
    # the CI image's own scripts, as they are: one install path, one way the CA bundle reaches it
    for script in ("include/docker/scripts/install_airflow.sh", "include/docker/scripts/with_extra_ca.sh"):
        assert engine.contexts[script] == (ROOT / script).read_text()
    assert engine.runs == [(PROBE.tag, ("bash", "-c", "pytest -q /opt/airflow/verify"))]
    assert engine.removed == [PROBE.tag]


def test_the_probe_dockerfile_installs_in_one_layer_with_the_ca_bundle_as_a_secret_only():
    dockerfile = (ROOT / PROBE_DOCKERFILE).read_text()
    instructions = [line.split()[0] for line in dockerfile.splitlines() if line and line[0] not in "# "]
    assert instructions.count("RUN") == 1 and "COPY" not in instructions and "ADD" not in instructions
    assert "FROM ${CI_IMAGE}" in dockerfile
    assert "--mount=type=secret,id=extra_ca,required=false" in dockerfile
    assert "with_extra_ca.sh bash /opt/image-scripts/install_airflow.sh packages" in dockerfile
    assert "AIRFLOW_CONSTRAINTS_LOCATION=/probe/constraints.txt" in dockerfile
    # kept out of include/docker, which every image build's context (and content key) holds
    assert not PROBE_DOCKERFILE.startswith("include/docker/")


def test_failing_tests_are_a_failed_probe_with_the_end_of_their_output():
    output = "\n".join(f"line {i}" for i in range(100)) + "\nE   AssertionError: celery 5.7.0 breaks it"
    engine = FakeProbeEngine(run=RunResult(1, output))
    result = _probe(engine)
    assert result["passed"] is False
    assert result["output_tail"].endswith("E   AssertionError: celery 5.7.0 breaks it")
    assert "line 99" in result["output_tail"] and "line 10\n" not in result["output_tail"]
    assert engine.removed == [PROBE.tag]


@pytest.mark.parametrize("error", [BuildFailed("docker build exited 1; last lines:\nconnection reset"),
                                   EngineError("pytest in probe ran longer than 1800s")])
def test_a_build_or_engine_fault_is_no_failed_probe_it_raises(error):
    engine = FakeProbeEngine(build_error=error) if isinstance(error, BuildFailed) else FakeProbeEngine(run=error)
    with pytest.raises(type(error)):
        _probe(engine)
    assert engine.removed == [PROBE.tag]


def test_upgrades_that_cannot_be_installed_together_prove_nothing_and_are_not_retried():
    engine = FakeProbeEngine(build_error=BuildFailed(
        "docker build exited 1; last lines:\n  x No solution found when resolving dependencies:\n"
        "  celery==5.7.0 depends on kombu>=5.6 and you require kombu==5.5.0"))
    with pytest.raises(ProbeNotInstallable, match="cannot be installed with the other current pins") as info:
        _probe(engine)
    assert info.value.permanent and engine.runs == [] and engine.removed == [PROBE.tag]


def test_an_empty_probe_installs_nothing_over_the_current_constraints(tmp_path):
    from airflow_image_factory.services.probe import probe_context

    probe_context(ROOT, tmp_path, Probe(ci_image=CI, tag="t:1", installs={}, constraints={"kombu": "5.5.0"}))
    assert Path(tmp_path, "probe", "requirements.txt").read_text() == ""
    assert Path(tmp_path, "probe", "constraints.txt").read_text() == "kombu==5.5.0\n"
