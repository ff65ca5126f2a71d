"""build_images under the real scheduler, as users run it: triggered through the REST API of the stack's
Airflow (LocalExecutor, PostgreSQL, triggerer), everything read back through the same API.

- With the build pool at 2, the two Python versions' builds of one run overlap in time (their start and
  end dates from the API), and no more than two builds ever run at once. While a build runs, its task
  log already holds the build's output (the API's log endpoint, read before the task ends).
- With the pool at 1, two runs of one branch triggered together (two commits) never build at once; one
  run's ``latest`` set is published, never a mix; their promotions take turns under the promotion lock
  (PostgreSQL's advisory lock: the workers are separate processes). The worker process of one run's
  running push is killed (its PID from the API, nothing broader): the retry completes and nothing is
  half-published.

The runs push to the stack's repository under a branch of their own, so main's images are untouched and
are these builds' cache. The first commit changes a module of the sources, so its builds run the steps
that install them (the dependency layers come from main's images), and ``rebuild`` makes every build
run on a stack where an earlier session published these commits too.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

import pytest

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.clients.settings_loader import load_settings
from tests.reliability.conftest import blobs_complete, branch_with_commits, revision_of, upstream_host
from tests.support.dag_runs import stack_versions

pytestmark = [pytest.mark.stack, pytest.mark.slow]

DAG_ID = "build_images"
BRANCH = "scheduler-runs"
POOL = "image_builds"
RUN_TIMEOUT = 1500
TOUCHED_MODULE = "airflow-core/src/airflow/_scheduler_runs.py"
BUILDKIT_LINE = "#"  # BuildKit's plain progress: "#7 [ 3/11] RUN ..."


@dataclass
class Interval:
    label: str
    start: datetime
    end: datetime

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass
class Observed:
    """What one trigger-and-follow saw: the runs' final task instances, and what happened meanwhile."""

    runs: dict[str, dict] = field(default_factory=dict)  # run_id -> final dag run
    tis: dict[str, list[dict]] = field(default_factory=dict)  # run_id -> final task instances
    live_log: dict | None = None  # a build's log read while that build was running
    killed: dict | None = None  # the push task instance whose process was killed


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _run_path(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"


def _get(api, path: str, **params) -> dict:
    answer = api.get(f"{api.base}{path}", params=params, timeout=30)
    answer.raise_for_status()
    return answer.json()


def _set_pool(api, slots: int) -> None:
    # the body must name the pool and its deferred rule; the mask makes only the slots change
    body = {"pool": POOL, "slots": slots, "include_deferred": False}
    api.patch(f"{api.base}/api/v2/pools/{POOL}", params={"update_mask": "slots"}, json=body,
              timeout=30).raise_for_status()


def _trigger(api, conf: dict) -> str:
    api.patch(f"{api.base}/api/v2/dags/{DAG_ID}", json={"is_paused": False}, timeout=30).raise_for_status()
    answer = api.post(f"{api.base}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf},
                      timeout=30)
    assert answer.status_code == 200, answer.text[:2000]
    return answer.json()["dag_run_id"]


def _tis(api, run_id: str) -> list[dict]:
    return _get(api, f"{_run_path(run_id)}/taskInstances", limit=1000)["task_instances"]


def _log(api, run_id: str, ti: dict, try_number: int | None = None) -> list[dict]:
    answer = api.get(
        f"{api.base}{_run_path(run_id)}/taskInstances/{ti['task_id']}/logs/{try_number or ti['try_number'] or 1}",
        params={"map_index": ti.get("map_index", -1), "full_content": "true"},
        headers={"Accept": "application/json"}, timeout=60,
    )
    answer.raise_for_status()
    content = answer.json().get("content", [])
    return [entry for entry in content if isinstance(entry, dict)]


def _events(entries: list[dict]) -> list[str]:
    return [str(entry.get("event", "")) for entry in entries]


def _state_of(api, run_id: str, ti: dict) -> str | None:
    index = ti.get("map_index", -1)
    path = f"{_run_path(run_id)}/taskInstances/{ti['task_id']}" + (f"/{index}" if index >= 0 else "")
    return _get(api, path).get("state")


def _is_task_process(pid: int, scheduler_pid: int) -> bool:
    """The PID the API reports is a live task process of the scheduler's LocalExecutor: in the
    scheduler's session (`make run` starts each component as a session leader) and not the scheduler
    itself. Nothing else is ever killed."""
    try:
        return pid != scheduler_pid and os.getsid(pid) == scheduler_pid
    except ProcessLookupError:
        return False


def _follow(api, run_ids: list[str], *, read_live_log: bool = False, kill_push_of: str | None = None,
            scheduler_pid: int | None = None) -> Observed:
    """Poll the runs to their end, as a user's client would; on the way, read one running build's log
    and/or kill the task process of ``kill_push_of``'s first running push."""
    seen = Observed()
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        states = {run_id: _get(api, _run_path(run_id))["state"] for run_id in run_ids}
        for run_id in run_ids:
            tis = _tis(api, run_id)
            running = [ti for ti in tis if ti.get("state") == "running"]
            if read_live_log and seen.live_log is None:
                for ti in (t for t in running if t["task_id"].startswith("python.build_")):
                    lines = [e for e in _events(_log(api, run_id, ti)) if e.startswith(BUILDKIT_LINE)]
                    state_after = _state_of(api, run_id, ti)
                    if lines and state_after == "running":
                        seen.live_log = {"task": ti["task_id"], "version": ti.get("rendered_map_index"),
                                         "lines": lines, "state_after": state_after}
                        break
            if run_id == kill_push_of and seen.killed is None:
                for ti in running:
                    if ti["task_id"].startswith("python.push_") and ti.get("pid") and ti["try_number"] == 1:
                        # a push of cached layers takes a second or two: it may have ended since the API
                        # said "running" (its pid gone, or already another process's); then try the next
                        if not _is_task_process(ti["pid"], scheduler_pid):
                            continue
                        try:
                            os.kill(ti["pid"], signal.SIGKILL)
                        except ProcessLookupError:
                            continue
                        seen.killed = {**ti, "killed_at": time.time()}
                        break
        if all(state in ("success", "failed") for state in states.values()):
            break
        assert time.monotonic() < deadline, f"runs not done within {RUN_TIMEOUT}s: {states}"
        time.sleep(0.2 if kill_push_of and seen.killed is None else 1)  # a push is short: look often
    for run_id in run_ids:
        seen.runs[run_id] = _get(api, _run_path(run_id))
        seen.tis[run_id] = _tis(api, run_id)
    return seen


def _builds(tis: list[dict]) -> list[Interval]:
    return [
        Interval(f"{ti['task_id']} [{ti.get('rendered_map_index')}]", _when(ti["start_date"]), _when(ti["end_date"]))
        for ti in tis if ti["task_id"].startswith("python.build_") and ti.get("start_date") and ti.get("end_date")
        and ti["state"] != "skipped"  # a variant the run does not build skips itself in a moment: no build
    ]


def _most_at_once(intervals: list[Interval]) -> int:
    edges = sorted([(i.start, 1) for i in intervals] + [(i.end, -1) for i in intervals])  # an end before a start
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def _failures(observed: Observed) -> str:
    return "; ".join(f"{run}: {ti['task_id']} [{ti.get('rendered_map_index')}] {ti['state']}"
                     for run, tis in observed.tis.items() for ti in tis if ti.get("state") == "failed")


@pytest.fixture(scope="module")
def commits(real_airflow) -> list[str]:
    # The first commit adds a module to airflow-core, so the pool-of-two run installs its sources for real
    # (tens of seconds per build: long enough to see two at once; the dependency layers come from main's
    # images); the two on top are empty, so the pool-of-one runs take seconds.
    return branch_with_commits(BRANCH, 4, touch=TOUCHED_MODULE)[1:]


@pytest.fixture(scope="module")
def pool_of_two(real_api, commits) -> Observed:
    """One run, every stack Python version, the pool at 2."""
    _set_pool(real_api, 2)
    run_id = _trigger(real_api, {"branch": BRANCH, "commit_sha": commits[0], "python_versions": stack_versions(),
                                 "rebuild": True})
    return _follow(real_api, [run_id], read_live_log=True)


@pytest.fixture(scope="module")
def pool_of_one(real_api, airflow_server_module, commits, pool_of_two) -> Observed:
    """Two runs of the branch (its two newer commits) triggered together, one Python version, the pool at
    1; the second run's first push is killed while it runs."""
    _set_pool(real_api, 1)
    try:
        python = stack_versions()[:1]
        run_ids = [_trigger(real_api, {"branch": BRANCH, "commit_sha": sha, "python_versions": python, "rebuild": True})
                   for sha in commits[1:]]
        scheduler_pid = airflow_server_module.running("scheduler")
        assert scheduler_pid, "the stack's Airflow has no scheduler running"
        return _follow(real_api, run_ids, kill_push_of=run_ids[1], scheduler_pid=scheduler_pid)
    finally:
        _set_pool(real_api, int(os.environ.get("AIRFLOW_SERVER_POOL_SLOTS", "2")))


def test_with_the_pool_at_two_the_python_versions_build_at_once(pool_of_two):
    [(run_id, run)] = pool_of_two.runs.items()
    assert run["state"] == "success", _failures(pool_of_two)
    builds = _builds(pool_of_two.tis[run_id])
    versions = stack_versions()
    assert {b.label.split("[")[1].rstrip("]") for b in builds} == set(versions)
    by_version = {v: [b for b in builds if b.label.endswith(f"[{v}]")] for v in versions}
    overlapping = [(a.label, b.label) for a in by_version[versions[0]] for v in versions[1:] for b in by_version[v]
                   if a.overlaps(b)]
    assert overlapping, [(b.label, b.start.isoformat(), b.end.isoformat()) for b in builds]
    assert _most_at_once(builds) <= 2


def test_a_build_log_streams_while_the_build_runs(pool_of_two):
    live = pool_of_two.live_log
    assert live is not None, "no build's log held BuildKit output while the build was running"
    assert live["state_after"] == "running" and live["lines"], live


def test_with_the_pool_at_one_no_two_builds_of_two_runs_overlap(pool_of_one):
    assert all(run["state"] == "success" for run in pool_of_one.runs.values()), _failures(pool_of_one)
    builds = [b for tis in pool_of_one.tis.values() for b in _builds(tis)]
    assert len(builds) >= 2 * len(pool_of_one.runs)  # every run built its CI and PROD images
    assert _most_at_once(builds) == 1, sorted((b.start, b.end, b.label) for b in builds)


def test_the_killed_push_was_retried_and_completed(real_api, pool_of_one):
    killed = pool_of_one.killed
    assert killed is not None, "no push of the second run was seen running, so none was killed"
    run_id = killed["dag_run_id"]
    final = next(ti for ti in pool_of_one.tis[run_id]
                 if ti["task_id"] == killed["task_id"] and ti.get("map_index") == killed.get("map_index"))
    assert final["state"] == "success" and final["try_number"] == 2, final
    first_try = _get(real_api, f"{_run_path(run_id)}/taskInstances/{killed['task_id']}/{killed['map_index']}"
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
    assert len(set(owners.values())) == 1 and owners["ci"] in commits[1:], owners
    for kind in ("ci", "prod"):
        path = f"{repository}/{BRANCH}/{kind}/python{python}"
        assert direct_registry.manifest_digest(path, "latest") == direct_registry.manifest_digest(path, owners[kind])


def test_the_two_promotions_took_turns_under_the_lock(real_api, pool_of_one):
    windows = []
    for run_id, tis in pool_of_one.tis.items():
        promote = next(ti for ti in tis if ti["task_id"] == "promote_latest")
        entries = _log(real_api, run_id, promote)
        at = {word: _when(e["timestamp"]) for e in entries for word in ("acquired", "released")
              if str(e.get("event", "")).startswith(f"promotion lock {word}")}
        assert set(at) == {"acquired", "released"}, _events(entries)[-20:]
        windows.append((at["acquired"], at["released"]))
    (_, first_released), (second_acquired, _) = sorted(windows)
    assert first_released <= second_acquired, windows
