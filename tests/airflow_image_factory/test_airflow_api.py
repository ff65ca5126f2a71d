"""clients/airflow_api: the run's note through Airflow's REST API, against a small HTTP server on loopback
that answers as the API server does (a token from /auth/token, PATCH of the run with update_mask=note,
GET of the run)."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_image_factory.clients.airflow_api import NOTE_LIMIT, fit_note, get_run_note, set_run_note
from airflow_image_factory.exceptions import RunNoteNotSet
from tests.support.token_server import send_json

PASSWORD = secrets.token_urlsafe(12)  # made per run: the tests look for it in what is said


class FakeApi(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, dict, dict]] = []  # method, path, headers, body
        self.token_status = 201

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeApi

    def _answer(self, status: int, body: dict) -> None:
        send_json(self, status, body)

    def _record(self) -> dict:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        return body

    def do_POST(self) -> None:
        body = self._record()
        ok = self.path == "/auth/token" and body == {"username": "admin", "password": PASSWORD}
        status = self.server.token_status if ok else 401
        self._answer(status, {"access_token": "tok-1"} if status == 201 else {"detail": "Invalid credentials"})

    def do_PATCH(self) -> None:
        body = self._record()
        if self.headers.get("Authorization") != "Bearer tok-1":
            self._answer(403, {"detail": "Forbidden"})
        else:
            self._answer(200, {"dag_run_id": "x", "note": body.get("note")})

    def do_GET(self) -> None:
        self._record()
        if self.headers.get("Authorization") != "Bearer tok-1":
            self._answer(403, {"detail": "Forbidden"})
        else:
            self._answer(200, {"dag_run_id": "x", "note": "Python 3.11: culprit idna"})

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_note_is_written_with_a_token_and_only_the_note_field(api):
    set_run_note(api.url, username="admin", password=PASSWORD, dag_id="nightly_images",
                 run_id="scheduled__2026-12-07T00:00:00+00:00", note="Python 3.11: culprit idna")
    (_, asked_first, _, _), (method, path, headers, body) = api.requests
    assert asked_first == "/auth/token" and method == "PATCH"
    assert path == "/api/v2/dags/nightly_images/dagRuns/scheduled__2026-12-07T00%3A00%3A00%2B00%3A00?update_mask=note"
    assert headers["Authorization"] == "Bearer tok-1" and body == {"note": "Python 3.11: culprit idna"}


def test_the_note_is_read_back_with_a_token(api):
    note = get_run_note(api.url, username="admin", password=PASSWORD, dag_id="nightly_images", run_id="r 1")
    assert note == "Python 3.11: culprit idna"
    (_, asked_first, _, _), (method, path, headers, _) = api.requests
    assert asked_first == "/auth/token" and method == "GET" and headers["Authorization"] == "Bearer tok-1"
    assert path == "/api/v2/dags/nightly_images/dagRuns/r%201"
    with pytest.raises(RunNoteNotSet, match="401"):
        get_run_note(api.url, username="admin", password=PASSWORD[::-1], dag_id="d", run_id="r")


def test_a_refused_login_names_the_step_not_the_password(api):
    with pytest.raises(RunNoteNotSet) as refused:
        set_run_note(api.url, username="admin", password=PASSWORD[::-1], dag_id="d", run_id="r", note="n")
    assert "/auth/token" in str(refused.value) and "401" in str(refused.value)
    assert PASSWORD[::-1] not in str(refused.value)
    assert [m for m, *_ in api.requests] == ["POST"]  # no PATCH without a token


def test_an_api_that_does_not_answer_is_a_run_note_not_set():
    with pytest.raises(RunNoteNotSet, match="did not answer"):
        set_run_note("http://127.0.0.1:9", username="u", password=PASSWORD, dag_id="d", run_id="r", note="n",
                     timeout=2)


def test_a_long_summary_is_cut_to_the_notes_limit_saying_where_the_rest_is():
    note = fit_note("x" * 5000)
    assert len(note) == NOTE_LIMIT and note.endswith("(the whole of it is in the task's log)")
    assert fit_note("short") == "short"


def test_the_verdict_writes_its_summary_as_the_note_through_the_connection(api, monkeypatch, capsys, caplog):
    from types import SimpleNamespace

    from airflow_image_factory.tasks import groups, hooks

    conn = SimpleNamespace(host=api.url, port=None, schema=None, login="admin", password=PASSWORD)
    monkeypatch.setattr(hooks, "find_connection", lambda connection_id: conn if connection_id ==
                        "image_factory_airflow_api" else None)
    context = {"dag": SimpleNamespace(dag_id="nightly_images"), "run_id": "r1"}
    groups._say_in_run_note(context, "Upgrade bisection of main: culprit idna==3.10")
    assert api.requests[-1][3] == {"note": "Upgrade bisection of main: culprit idna==3.10"}
    monkeypatch.setattr(hooks, "find_connection", lambda connection_id: None)
    groups._say_in_run_note(context, "again")
    assert len(api.requests) == 2  # no Connection: nothing asked of the API, and no error
    said = capsys.readouterr().out + caplog.text  # the task log, wherever this session's logging sends it
    assert PASSWORD not in said
