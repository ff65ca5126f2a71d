"""The DAG run's note, written through Airflow's public REST API.

Airflow 3's Task SDK gives a task no way to write its run's note (apache/airflow#64890), so a task that
has something for the UI's run page says it through the REST API, as a user would: a token from the
auth manager's ``/auth/token`` (the Connection's login and password), then ``PATCH`` of the run with
``update_mask=note``. The Connection (type http) names the API server's base URL as its host.
"""

from __future__ import annotations

from urllib.parse import quote

import requests

from airflow_image_factory.exceptions import RunNoteNotSet

# The metadata database keeps a note in 1000 characters (dag_run_note.content).
NOTE_LIMIT = 1000
_CUT = "\n… (the whole of it is in the task's log)"


def fit_note(text: str) -> str:
    """``text`` as a note the API accepts: cut to the limit, saying where the rest is."""
    return text if len(text) <= NOTE_LIMIT else text[: NOTE_LIMIT - len(_CUT)] + _CUT


def _authorized(http: requests.Session, base: str, username: str, password: str, timeout: float) -> dict[str, str]:
    """The Authorization header of a token from the auth manager's ``/auth/token``."""
    answer = http.post(f"{base}/auth/token", json={"username": username, "password": password}, timeout=timeout)
    if answer.status_code not in (200, 201):
        raise RunNoteNotSet(f"no token from {base}/auth/token for {username!r}: HTTP {answer.status_code}")
    token = answer.json().get("access_token")
    if not token:
        raise RunNoteNotSet(f"{base}/auth/token answered without an access_token")
    return {"Authorization": f"Bearer {token}"}


def _run_path(base: str, dag_id: str, run_id: str) -> str:
    return f"{base}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"


def set_run_note(
    base_url: str, *, username: str, password: str, dag_id: str, run_id: str, note: str, timeout: float = 30,
    session: requests.Session | None = None,
) -> None:
    """Write ``note`` on the run; :class:`RunNoteNotSet` (naming the step and the HTTP status, never the
    password) when the API refuses or does not answer."""
    base = base_url.rstrip("/")
    http = session or requests.Session()
    try:
        headers = _authorized(http, base, username, password, timeout)
        path = _run_path(base, dag_id, run_id)
        answer = http.patch(path, params={"update_mask": "note"}, json={"note": fit_note(note)}, headers=headers,
                            timeout=timeout)
        if answer.status_code != 200:
            raise RunNoteNotSet(f"PATCH {path}: HTTP {answer.status_code} {answer.text[:200]}")
    except requests.RequestException as exc:
        raise RunNoteNotSet(f"the Airflow API at {base} did not answer: {type(exc).__name__}") from None


def get_run_note(
    base_url: str, *, username: str, password: str, dag_id: str, run_id: str, timeout: float = 30,
    session: requests.Session | None = None,
) -> str:
    """The run's note ("" for none), read the same way; :class:`RunNoteNotSet` when it cannot be read."""
    base = base_url.rstrip("/")
    http = session or requests.Session()
    try:
        path = _run_path(base, dag_id, run_id)
        answer = http.get(path, headers=_authorized(http, base, username, password, timeout), timeout=timeout)
        if answer.status_code != 200:
            raise RunNoteNotSet(f"GET {path}: HTTP {answer.status_code} {answer.text[:200]}")
        return answer.json().get("note") or ""
    except requests.RequestException as exc:
        raise RunNoteNotSet(f"the Airflow API at {base} did not answer: {type(exc).__name__}") from None
