from __future__ import annotations

from airflow_image_factory.policy.naming import ImageKind, image_set
from airflow_image_factory.policy.promotion import VersionOutcome, plan_promotion

VERSIONS = ("3.11", "3.13")
D = {v: {"ci": f"sha256:{'1' * 63}{i}", "prod": f"sha256:{'2' * 63}{i}"} for i, v in enumerate(VERSIONS)}
IMAGES = {
    v: image_set(registry="localhost:5000", repository="apache/airflow", branch="main", python=v,
                 debian="bookworm", naming="slash", python_base_source="localhost:5000/library/python")
    for v in VERSIONS
}
LOCAL = {v: {"python": f"base-{v}", "prod-build": f"build-{v}", "ci-manifest": f"manifest-{v}"} for v in VERSIONS}


def outcomes(**passed):
    return {v: VersionOutcome(v, passed.get(v.replace(".", "_"), True), D[v]) for v in VERSIONS}


def test_all_passed_promotes_every_image_of_every_version():
    plan = plan_promotion(push=True, python_versions=VERSIONS, outcomes=outcomes(), images=IMAGES, local_images=LOCAL)
    assert plan.allowed
    targets = {s.target for s in plan.steps}
    assert "localhost:5000/apache/airflow/main/ci/python3.11:latest" in targets
    assert "localhost:5000/apache/airflow/main/prod-build/python3.13:latest" in targets
    assert "localhost:5000/apache/airflow/main/python:3.13-slim-bookworm" in targets
    assert len(plan.steps) == 10
    # CI and PROD: exactly the tested digests are re-tagged; pushes happen before any re-tag
    retag = {(s.python, s.kind): s.source_digest for s in plan.retags}
    assert retag[("3.13", ImageKind.PROD)] == D["3.13"]["prod"]
    assert {s.kind for s in plan.retags} == {ImageKind.CI, ImageKind.PROD}
    last_push = max(i for i, s in enumerate(plan.steps) if s.source_digest is None)
    first_retag = min(i for i, s in enumerate(plan.steps) if s.source_digest is not None)
    assert last_push < first_retag


def test_one_failure_moves_nothing_for_any_version():
    plan = plan_promotion(
        push=True, python_versions=VERSIONS, outcomes=outcomes(**{"3_13": False}), images=IMAGES, local_images=LOCAL
    )
    assert not plan.allowed and plan.steps == ()
    assert "3.13" in plan.reason


def test_missing_outcome_moves_nothing():
    partial = {"3.11": outcomes()["3.11"]}
    plan = plan_promotion(push=True, python_versions=VERSIONS, outcomes=partial, images=IMAGES, local_images=LOCAL)
    assert not plan.allowed and "3.13" in plan.reason


def test_push_off_publishes_nothing():
    plan = plan_promotion(push=False, python_versions=VERSIONS, outcomes=outcomes(), images=IMAGES, local_images=LOCAL)
    assert not plan.allowed and plan.steps == ()


def test_missing_digest_or_local_image_refuses():
    bad = {v: VersionOutcome(v, True, {"ci": D[v]["ci"]}) for v in VERSIONS}
    no_digest = plan_promotion(push=True, python_versions=VERSIONS, outcomes=bad, images=IMAGES, local_images=LOCAL)
    assert not no_digest.allowed
    no_local = plan_promotion(push=True, python_versions=VERSIONS, outcomes=outcomes(), images=IMAGES)
    assert not no_local.allowed


def test_outcome_round_trips():
    outcome = VersionOutcome("3.11", False, D["3.11"], ("pytest exited 1",))
    assert VersionOutcome.from_dict(outcome.to_dict()) == outcome


def test_fork_mode_reasons():
    from airflow_image_factory.policy.promotion import fork_mode_reason

    canonical = "https://github.com/apache/airflow.git"
    common = {"canonical_source": canonical, "registry": "ghcr.io"}
    assert fork_mode_reason(source_repo="https://github.com/Apache/airflow/", can_write=True, **common) is None
    fork = fork_mode_reason(source_repo="https://github.com/someone/airflow.git", can_write=True, **common)
    assert fork == f"source repository https://github.com/someone/airflow.git is not the canonical {canonical}"
    no_token = fork_mode_reason(source_repo=canonical, can_write=False, **common)
    assert no_token and "no write access to ghcr.io" in no_token


def test_a_reused_prod_build_stage_is_retagged_from_its_registry_digest():
    """A build that reused the published PROD build stage (content key) has no local image of it: its
    latest moves by manifest from the digest the build reused, like CI and PROD."""
    stage = f"sha256:{'3' * 64}"
    reused = {v: VersionOutcome(v, True, {**D[v], "prod-build": stage}) for v in VERSIONS}
    no_stage = {v: {k: ref for k, ref in LOCAL[v].items() if k != "prod-build"} for v in VERSIONS}
    plan = plan_promotion(push=True, python_versions=VERSIONS, outcomes=reused, images=IMAGES, local_images=no_stage)
    assert plan.allowed, plan.reason
    retags = {(s.python, s.kind): s.source_digest for s in plan.retags}
    assert retags[("3.13", ImageKind.PROD_BUILD)] == stage
    assert {s.kind for s in plan.pushes} == {ImageKind.PYTHON_BASE, ImageKind.CI_MANIFEST}


def test_each_requested_variant_is_promoted_and_no_other():
    slim = {v: {**D[v], "prod-slim": f"sha256:{'3' * 63}{i}"} for i, v in enumerate(VERSIONS)}
    local = {v: {**LOCAL[v], "prod-slim-build": f"slim-build-{v}"} for v in VERSIONS}
    both = plan_promotion(push=True, python_versions=VERSIONS, images=IMAGES, local_images=local,
                          outcomes={v: VersionOutcome(v, True, slim[v]) for v in VERSIONS},
                          variants=("regular", "slim"))
    assert both.allowed and len(both.steps) == 14
    retag = {(s.python, s.kind): s.source_digest for s in both.retags}
    assert retag[("3.11", ImageKind.PROD_SLIM)] == slim["3.11"]["prod-slim"]
    assert "localhost:5000/apache/airflow/main/prod-slim-build/python3.13:latest" in {s.target for s in both.pushes}
    # a slim-only run: no regular PROD digest is needed and no regular latest moves
    only = {v: {"ci": D[v]["ci"], "prod-slim": slim[v]["prod-slim"]} for v in VERSIONS}
    plan = plan_promotion(push=True, python_versions=VERSIONS, images=IMAGES, local_images=local,
                          outcomes={v: VersionOutcome(v, True, only[v]) for v in VERSIONS}, variants=("slim",))
    assert plan.allowed and {s.kind for s in plan.steps} == {
        ImageKind.PYTHON_BASE, ImageKind.CI_MANIFEST, ImageKind.CI, ImageKind.PROD_SLIM_BUILD, ImageKind.PROD_SLIM}
    # a requested variant without its tested digest moves nothing at all
    refused = plan_promotion(push=True, python_versions=VERSIONS, images=IMAGES, local_images=local,
                             outcomes=outcomes(), variants=("regular", "slim"))
    assert not refused.allowed and "prod-slim" in refused.reason
