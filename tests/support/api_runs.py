"""DAG runs of the stack's real Airflow, triggered and followed through its REST API as a user's client
would: the runs' task instances, their logs (read while a task runs, too), the build pool's size.

``api`` is a ``requests.Session`` holding the admin's token, with ``.base`` its URL (the ``real_api``
fixture of tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

BUILD_DAG = "build_images"
POOL = "image_builds"
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


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def run_path(run_id: str, dag_id: str = BUILD_DAG) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


def get(api, path: str, **params) -> dict:
    answer = api.get(f"{api.base}{path}", params=params, timeout=30)
    answer.raise_for_status()
    return answer.json()


def set_pool(api, slots: int) -> None:
    # the body must name the pool and its deferred rule; the mask makes only the slots change
    body = {"pool": POOL, "slots": slots, "include_deferred": False}
    api.patch(f"{api.base}/api/v2/pools/{POOL}", params={"update_mask": "slots"}, json=body,
              timeout=30).raise_for_status()


def default_pool_slots() -> int:
    return int(os.environ.get("AIRFLOW_SERVER_POOL_SLOTS", "2"))  # what include/stack/airflow_server.py sets


def trigger(api, conf: dict, dag_id: str = BUILD_DAG) -> str:
    deadline = time.monotonic() + 180  # a server just started may not have parsed the DAG yet
    while api.get(f"{api.base}/api/v2/dags/{dag_id}", timeout=30).status_code == 404:
        assert time.monotonic() < deadline, f"{dag_id} was not parsed within 180 s (the dag-processor's log)"
        time.sleep(2)
    api.patch(f"{api.base}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=30).raise_for_status()
    answer = api.post(f"{api.base}/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf},
                      timeout=30)
    assert answer.status_code == 200, answer.text[:2000]
    return answer.json()["dag_run_id"]


def task_instances(api, run_id: str) -> list[dict]:
    return get(api, f"{run_path(run_id)}/taskInstances", limit=1000)["task_instances"]


def log(api, run_id: str, ti: dict, try_number: int | None = None) -> list[dict]:
    answer = api.get(
        f"{api.base}{run_path(run_id)}/taskInstances/{ti['task_id']}/logs/{try_number or ti['try_number'] or 1}",
        params={"map_index": ti.get("map_index", -1), "full_content": "true"},
        headers={"Accept": "application/json"}, timeout=60,
    )
    answer.raise_for_status()
    content = answer.json().get("content", [])
    return [entry for entry in content if isinstance(entry, dict)]


def events(entries: list[dict]) -> list[str]:
    return [str(entry.get("event", "")) for entry in entries]


def run_text(api, run_id: str, tis: list[dict]) -> str:
    """Every try's log of every task instance of the run, as text (what ``airflow dags test`` prints)."""
    lines = []
    for ti in sorted(tis, key=lambda t: (t["task_id"], t.get("map_index", -1))):
        for attempt in range(1, (ti.get("try_number") or 0) + 1):
            lines.append(f"--- {ti['task_id']} [{ti.get('rendered_map_index') or ''}] try {attempt}")
            lines += events(log(api, run_id, ti, attempt))
    return "\n".join(lines)


def state_of(api, run_id: str, ti: dict) -> str | None:
    index = ti.get("map_index", -1)
    path = f"{run_path(run_id)}/taskInstances/{ti['task_id']}" + (f"/{index}" if index >= 0 else "")
    return get(api, path).get("state")


def is_task_process(pid: int, scheduler_pid: int) -> bool:
    """The PID the API reports is a live task process of the scheduler's LocalExecutor: in the
    scheduler's session (`make run` starts each component as a session leader) and not the scheduler
    itself. Nothing else is ever killed."""
    try:
        return pid != scheduler_pid and os.getsid(pid) == scheduler_pid
    except ProcessLookupError:
        return False


def follow(api, run_ids: list[str], *, timeout: float, read_live_log: bool = False,
           kill_push_of: str | None = None, scheduler_pid: int | None = None) -> Observed:
    """Poll the runs to their end, as a user's client would; on the way, read one running build's log
    and/or kill the task process of ``kill_push_of``'s first running push."""
    seen = Observed()
    deadline = time.monotonic() + timeout
    while True:
        states = {run_id: get(api, run_path(run_id))["state"] for run_id in run_ids}
        for run_id in run_ids:
            tis = task_instances(api, run_id)
            running = [ti for ti in tis if ti.get("state") == "running"]
            if read_live_log and seen.live_log is None:
                for ti in (t for t in running if t["task_id"].startswith("python.build_")):
                    lines = [e for e in events(log(api, run_id, ti)) if e.startswith(BUILDKIT_LINE)]
                    state_after = state_of(api, run_id, ti)
                    if lines and state_after == "running":
                        seen.live_log = {"task": ti["task_id"], "version": ti.get("rendered_map_index"),
                                         "lines": lines, "state_after": state_after}
                        break
            if run_id == kill_push_of and seen.killed is None:
                for ti in running:
                    if ti["task_id"].startswith("python.push_") and ti.get("pid") and ti["try_number"] == 1:
                        # a push of cached layers takes a second or two: it may have ended since the API
                        # said "running" (its pid gone, or already another process's); then try the next
                        if not is_task_process(ti["pid"], scheduler_pid):
                            continue
                        try:
                            os.kill(ti["pid"], signal.SIGKILL)
                        except ProcessLookupError:
                            continue
                        seen.killed = {**ti, "killed_at": time.time()}
                        break
        if all(state in ("success", "failed") for state in states.values()):
            break
        assert time.monotonic() < deadline, f"runs not done within {timeout}s: {states}"
        time.sleep(0.2 if kill_push_of and seen.killed is None else 1)  # a push is short: look often
    for run_id in run_ids:
        seen.runs[run_id] = get(api, run_path(run_id))
        seen.tis[run_id] = task_instances(api, run_id)
    return seen


def builds(tis: list[dict]) -> list[Interval]:
    return [
        Interval(f"{ti['task_id']} [{ti.get('rendered_map_index')}]", when(ti["start_date"]), when(ti["end_date"]))
        for ti in tis if ti["task_id"].startswith("python.build_") and ti.get("start_date") and ti.get("end_date")
        and ti["state"] != "skipped"  # a variant the run does not build skips itself in a moment: no build
    ]


def most_at_once(intervals: list[Interval]) -> int:
    edges = sorted([(i.start, 1) for i in intervals] + [(i.end, -1) for i in intervals])  # an end before a start
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def failures(observed: Observed) -> str:
    return "; ".join(f"{run}: {ti['task_id']} [{ti.get('rendered_map_index')}] {ti['state']}"
                     for run, tis in observed.tis.items() for ti in tis if ti.get("state") == "failed")


@dataclass
class ApiRun:
    """One followed run, shaped as tests/support/dag_runs.DagRun where the build tests read it."""

    run_id: str
    observed: Observed
    output: str  # every task's log, as text
    seconds: float

    @property
    def returncode(self) -> int:
        return 0 if self.observed.runs[self.run_id]["state"] == "success" else 1

    @property
    def tis(self) -> list[dict]:
        return self.observed.tis[self.run_id]
