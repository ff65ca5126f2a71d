"""build_images under the real scheduler, as users run it: triggered through the REST API of the stack's
Airflow (LocalExecutor, PostgreSQL, triggerer), everything read back through the same API.

- With the build pool at 2, the two Python versions' builds of one run overlap in time (their start and
  end dates from the API), and no more than two builds ever run at once. While a build runs, its task
  log already holds the build's output (the API's log endpoint, read before the task ends). The run is
  main's build (``main_build`` in tests/conftest.py): the session's first, so its builds are real ones.
- With the pool at 1, two runs of one branch triggered together (two commits) never build at once; one
  run's ``latest`` set is published, never a mix; their promotions take turns under the promotion lock
  (PostgreSQL's advisory lock: the workers are separate processes). The worker process of one run's
  running push is killed (its PID from the API, nothing broader): the retry completes and nothing is
  half-published.

The pool-of-one runs push to the stack's repository under a branch of their own, so main's images are
untouched and are these builds' cache; ``rebuild`` makes every build run on a stack where an earlier
session published these commits too.
"""

from __future__ import annotations

import pytest

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.clients.settings_loader import load_settings
from tests.reliability.conftest import blobs_complete, branch_with_commits, revision_of, upstream_host
from tests.support.api_runs import (
    Observed,
    builds,
    default_pool_slots,
    events,
    failures,
    follow,
    get,
    log,
    most_at_once,
    run_path,
    set_pool,
    trigger,
    when,
)
from tests.support.dag_runs import stack_versions

pytestmark = [pytest.mark.stack, pytest.mark.slow]

BRANCH = "scheduler-runs"
RUN_TIMEOUT = 1500


@pytest.fixture(scope="module")
def commits(real_airflow) -> list[str]:
    # two empty commits on top of main: their builds take seconds (every layer from main's images)
    return branch_with_commits(BRANCH, 3)[1:]


@pytest.fixture(scope="module")
def pool_of_two(main_build) -> Observed:
    """Main's build: one run, every stack Python version, the pool at 2."""
    return main_build.observed


@pytest.fixture(scope="module")
def pool_of_one(real_api, airflow_server_module, commits, pool_of_two) -> Observed:
    """Two runs of the branch (its two newer commits) triggered together, one Python version, the pool at
    1; the second run's first push is killed while it runs."""
    set_pool(real_api, 1)
    try:
        python = stack_versions()[:1]
        run_ids = [trigger(real_api, {"branch": BRANCH, "commit_sha": sha, "python_versions": python, "rebuild": True})
                   for sha in commits]
        scheduler_pid = airflow_server_module.running("scheduler")
        assert scheduler_pid, "the stack's Airflow has no scheduler running"
        return follow(real_api, run_ids, timeout=RUN_TIMEOUT, kill_push_of=run_ids[1], scheduler_pid=scheduler_pid)
    finally:
        set_pool(real_api, default_pool_slots())

def test_with_the_pool_at_two_the_python_versions_build_at_once(pool_of_two):
    [(run_id, run)] = pool_of_two.runs.items()
    assert run["state"] == "success", failures(pool_of_two)
    started = builds(pool_of_two.tis[run_id])
    versions = stack_versions()
    assert {b.label.split("[")[1].rstrip("]") for b in started} == set(versions)
    by_version = {v: [b for b in started if b.label.endswith(f"[{v}]")] for v in versions}
    overlapping = [(a.label, b.label) for a in by_version[versions[0]] for v in versions[1:] for b in by_version[v]
                   if a.overlaps(b)]
    assert overlapping, [(b.label, b.start.isoformat(), b.end.isoformat()) for b in started]
    assert most_at_once(started) <= 2


def test_a_build_log_streams_while_the_build_runs(pool_of_two):
    live = pool_of_two.live_log
    assert live is not None, "no build's log held BuildKit output while the build was running"
    assert live["state_after"] == "running" and live["lines"], live


def test_with_the_pool_at_one_no_two_builds_of_two_runs_overlap(pool_of_one):
    assert all(run["state"] == "success" for run in pool_of_one.runs.values()), failures(pool_of_one)
    started = [b for tis in pool_of_one.tis.values() for b in builds(tis)]
    assert len(started) >= 2 * len(pool_of_one.runs)  # every run built its CI and PROD images
    assert most_at_once(started) == 1, sorted((b.start, b.end, b.label) for b in started)


def test_the_killed_push_was_retried_and_completed(real_api, pool_of_one):
    killed = pool_of_one.killed
    assert killed is not None, "no push of the second run was seen running, so none was killed"
    run_id = killed["dag_run_id"]
    final = next(ti for ti in pool_of_one.tis[run_id]
                 if ti["task_id"] == killed["task_id"] and ti.get("map_index") == killed.get("map_index"))
    assert final["state"] == "success" and final["try_number"] == 2, final
    first_try = get(real_api, f"{run_path(run_id)}/taskInstances/{killed['task_id']}/{killed['map_index']}"
                               "/tries/1")
    assert first_try["state"] == "failed", first_try


def test_the_latest_set_is_one_runs_and_every_blob_is_whole(pool_of_one, commits):
    direct_registry = RegistryClient(upstream_host(), retries=2, backoff=0.2)
    repository = load_settings().repository
    python = stack_versions()[0]
    owners = {}
    for kind in ("ci", "prod", "prod-build", "ci-manifest"):
        path = f"{repository}/{BRANCH}/{kind}/python{python}"
        owners[kind] = revision_of(direct_registry, path, "latest")
        assert not blobs_complete(direct_registry, path, "latest"), path
    assert len(set(owners.values())) == 1 and owners["ci"] in commits, owners
    for kind in ("ci", "prod"):
        path = f"{repository}/{BRANCH}/{kind}/python{python}"
        assert direct_registry.manifest_digest(path, "latest") == direct_registry.manifest_digest(path, owners[kind])


def test_the_two_promotions_took_turns_under_the_lock(real_api, pool_of_one):
    windows = []
    for run_id, tis in pool_of_one.tis.items():
        promote = next(ti for ti in tis if ti["task_id"] == "promote_latest")
        entries = log(real_api, run_id, promote)
        at = {word: when(e["timestamp"]) for e in entries for word in ("acquired", "released")
              if str(e.get("event", "")).startswith(f"promotion lock {word}")}
        assert set(at) == {"acquired", "released"}, events(entries)[-20:]
        windows.append((at["acquired"], at["released"]))
    (_, first_released), (second_acquired, _) = sorted(windows)
    assert first_released <= second_acquired, windows
