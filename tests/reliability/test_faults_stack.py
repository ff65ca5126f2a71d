"""build_images through a flaky registry: a fault-injecting proxy on loopback in front of the stack's
real registry. Both the Docker engine's pushes and our RegistryClient talk to ``127.0.0.1:<proxy>``
(docker allows plain HTTP to 127.0.0.0/8), with the repository ``reliability/faults`` of our own.

- A full run for one Python version with a few percent of requests failing (5xx, 429 with
  Retry-After, dropped connections, slow answers) and one blob upload killed mid-body completes,
  and ``latest`` is the tested ``:SHA`` digest, every blob of it whole.
- A registry that never recovers fails the run with a clear message after bounded retries, and no
  ``latest`` moves.
- The engine's push on its own: a killed upload is retried and completes; a dead registry makes it
  give up after the configured tries.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from airflow_image_factory.clients.engine import BuildSpec, Engine
from airflow_image_factory.exceptions import EngineError
from tests.reliability.conftest import PYTHON, blobs_complete, latest_digests, untag_local_images, upstream_host
from tests.support.dag_runs import run_dag
from tests.support.fault_proxy import Fault, fault_proxy

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPOSITORY = "reliability/faults"
BRANCH = "main"
# Bytes of a blob upload that reach the registry before the connection is cut. Small, so that it
# always hits something: layers the repository already holds are not uploaded again, but every
# build's image config (a few KB; its labels change) is.
CUT = 2048


def _blob_patch(method: str, path: str) -> bool:
    return method == "PATCH" and "/blobs/uploads/" in path


def _by_digest(method: str, path: str) -> bool:
    # Only our RegistryClient asks for manifests by digest (promotion's pre-flight and re-tag).
    return "/manifests/sha256:" in path


def _conf(registry: str, **extra) -> dict:
    # cache "local": the builds hit the engine's warm cache and read nothing through the proxy,
    # so every fault lands on a push or on the promotion.
    return {"branch": BRANCH, "python_versions": [PYTHON], "registry": registry, "repository": REPOSITORY,
            "cache": "local", **extra}


@pytest.fixture(scope="module")
def flaky_run(stack_env):
    faults = (
        Fault(status=None, drop_after_bytes=CUT, match=_blob_patch, times=1),  # a push killed mid-upload
        Fault(429, retry_after="1", match=lambda m, p: m == "HEAD" and _by_digest(m, p), times=1),
        Fault(drop=True, match=lambda m, p: m == "GET" and _by_digest(m, p), times=1),
        Fault(503, match=lambda m, p: m == "PUT" and p.endswith("/manifests/latest"), times=1),
        Fault(status=None, delay=3, match=lambda m, p: m == "HEAD" and "/blobs/" in p, times=2),  # slow
    )
    mix = (Fault(503), Fault(502), Fault(429, retry_after="1"), Fault(drop=True), Fault(status=None, delay=2))
    with fault_proxy(upstream_host(), *faults, random_rate=0.03, random_faults=mix, seed=20261121) as proxy:
        run = run_dag("build_images", _conf(proxy.host), name="reliability-faults")
        events = list(proxy.events)
        host = proxy.host
    # What the proxy did, next to the run's log, for whoever reads a failure.
    lines = [f"{e.at - events[0].at:8.2f}s {e.method:6} {e.path[:90]:90} {e.outcome} {e.body_bytes}" for e in events]
    faulted = sum(not e.outcome.startswith("forwarded") for e in events)
    lines.append(f"{len(events)} requests, {faulted} faulted or slowed")
    run.log_path.with_suffix(".proxy.txt").write_text("\n".join(lines) + "\n")
    yield run, events, host
    untag_local_images(host)


def test_flaky_registry_run_completes(flaky_run):
    run, events, _ = flaky_run
    assert run.returncode == 0, run.output[-6000:]
    faulted = [e for e in events if not e.outcome.startswith("forwarded")]
    outcomes = {e.outcome for e in faulted}
    # every kind of fault happened, and only a few percent of the requests failed
    assert "dropped mid-body" in outcomes
    assert {"fault 503", "fault 429", "dropped"} <= outcomes, outcomes
    assert any(o.startswith("slow") for o in outcomes), outcomes
    # our RegistryClient met its faults too (only it asks for manifests by digest) and got past them
    client_faults = {(e.method, e.outcome) for e in faulted if _by_digest(e.method, e.path)}
    assert {("HEAD", "fault 429"), ("GET", "dropped")} <= client_faults, client_faults
    failed = [e for e in faulted if not e.outcome.startswith("slow")]
    assert 0.01 <= len(failed) / len(events) <= 0.2, (len(failed), len(events))


def test_latest_is_the_tested_digest(flaky_run, direct_registry, stack_env):
    run, _, host = flaky_run
    assert run.returncode == 0, run.output[-3000:]
    sha = re.search(r"Pushed \S+/ci/python[\d.]+:([0-9a-f]{40}) as", run.output).group(1)
    for kind in ("ci", "prod"):
        path = f"{REPOSITORY}/{BRANCH}/{kind}/python{PYTHON}"
        tested = direct_registry.manifest_digest(path, sha)
        assert tested is not None
        assert direct_registry.manifest_digest(path, "latest") == tested
        # the digest the push task reported after the checks passed is the one published
        assert f"Pushed {host}/{path}:{sha} as {tested}" in run.output


def test_killed_upload_left_nothing_half_pushed(flaky_run, direct_registry):
    _, events, _ = flaky_run
    cut = [e for e in events if e.outcome == "dropped mid-body"]
    assert [e.body_bytes for e in cut] == [CUT]
    # the upload that was cut was started again and completed (a later PATCH of the same repository)
    assert any(_blob_patch(e.method, e.path) and e.outcome == "forwarded 202" and e.at > cut[0].at for e in events)
    for kind in ("ci", "prod", "prod-build", "ci-manifest"):
        path = f"{REPOSITORY}/{BRANCH}/{kind}/python{PYTHON}"
        assert blobs_complete(direct_registry, path, "latest") == [], path


def test_registry_that_never_recovers_fails_the_run_and_moves_no_latest(flaky_run, direct_registry):
    before = latest_digests(direct_registry, REPOSITORY, BRANCH)
    assert before["ci"] is not None, "the flaky run should have published latest first"
    with fault_proxy(upstream_host(), Fault(503, times=None)) as proxy:
        host = proxy.host
        run = run_dag(
            "build_images", _conf(host, cache="pulled"), name="reliability-never-recovers",
            env={"IMAGE_FACTORY_PUSH_RETRIES": "2"}, timeout=900,
        )
        attempts = len(proxy.events)
    assert run.returncode != 0
    # the first task that talks to the registry says which registry, what failed, how often, and why
    assert re.search(rf"registry {re.escape(host)} unavailable: [A-Z]+ /v2/\S+ failed after 3 tries; last status 503",
                     run.output), run.output[-4000:]
    assert "Pushed " not in run.output and "promoted " not in run.output
    # bounded: 3 tries per request, one Airflow retry per task, nothing more
    assert attempts <= 3 * 2 * 3, attempts
    assert run.seconds < 420
    assert latest_digests(direct_registry, REPOSITORY, BRANCH) == before


# --------------------------------------------------------------------------- the engine's push alone


@pytest.fixture(scope="module")
def engine(stack_env) -> Engine:
    import os

    return Engine(cli=os.environ.get("IMAGE_FACTORY_DOCKER_CLI", ""))


@pytest.fixture(scope="module")
def small_image(engine, tmp_path_factory) -> str:
    """A FROM-scratch image with one ~6 MB layer of random bytes (so an upload can be cut mid-blob)."""
    import os

    context: Path = tmp_path_factory.mktemp("small-image")
    (context / "payload").write_bytes(os.urandom(6_000_000))
    (context / "Dockerfile").write_text("FROM scratch\nCOPY payload /payload\n")
    report = engine.build(BuildSpec(context=context, dockerfile="Dockerfile", tags=("reliability-small:probe",)))
    yield report.image_id
    engine.remove("reliability-small:probe")


def test_engine_push_survives_a_killed_upload(engine, small_image, direct_registry):
    with fault_proxy(
        upstream_host(),
        Fault(status=None, drop_after_bytes=1_000_000, match=_blob_patch, times=1),
        Fault(503, match=lambda m, p: m == "PUT" and "/manifests/" in p, times=1),
    ) as proxy:
        ref = f"{proxy.host}/{REPOSITORY}/engine-probe:killed"
        engine.tag(small_image, ref)
        try:
            digest = engine.push(ref, retries=4, backoff=0.5)
        finally:
            engine.remove(ref)
        outcomes = proxy.outcomes()
    assert "dropped mid-body" in outcomes and "fault 503" in outcomes
    assert direct_registry.manifest_digest(f"{REPOSITORY}/engine-probe", "killed") == digest
    assert blobs_complete(direct_registry, f"{REPOSITORY}/engine-probe", "killed") == []


def test_engine_push_gives_up_on_a_dead_registry(engine, small_image):
    with fault_proxy(upstream_host(), Fault(503, times=None)) as proxy:
        ref = f"{proxy.host}/{REPOSITORY}/engine-probe:dead"
        engine.tag(small_image, ref)
        started = time.monotonic()
        try:
            with pytest.raises(EngineError) as error:
                engine.push(ref, retries=1, backoff=0.5)
        finally:
            engine.remove(ref)
        uploads = [e for e in proxy.events if e.method == "POST"]
    # One engine try is the daemon's own 5 tries per layer (5+10+15+20 s apart): bounded, but slow,
    # which is why the push task asks the registry client first (see the never-recovers run). One try
    # shows the bound; a further try repeats it (that the loop tries again: the killed-upload test above).
    assert len(uploads) == 5
    assert time.monotonic() - started < 70
    message = str(error.value)
    assert ref in message and "failed after 1 tries" in message and "503" in message
