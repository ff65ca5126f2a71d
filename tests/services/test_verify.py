"""services.verify without Airflow or an engine: small fakes of the engine, its containers and the HTTP
answers show what fails a verification and what it names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_image_factory.clients.engine import RunResult
from airflow_image_factory.exceptions import VerificationFailed
from airflow_image_factory.policy.image_contract import ImageCheck
from airflow_image_factory.services import verify

IMAGE = "localhost:5000/apache/airflow/main/prod/python3.11:abc"
UI_PAGE = '<html><script type="module" src="./static/assets/index-1.js"></script></html>'


class FakeContainer:
    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.status = "created"
        self.attrs = {"NetworkSettings": {"IPAddress": "172.17.0.9"}}
        self.removed = False

    def reload(self):
        if self.statuses:
            self.status = self.statuses.pop(0)

    def logs(self, tail):
        return b"ImportError: no fab\n"

    def remove(self, force):
        self.removed = True


class FakeEngine:
    def __init__(self, results=(), container=None):
        self.results = list(results)
        self.container = container
        self.runs, self.started = [], []

    def run(self, image, *, command, user, environment, on_line, timeout):
        self.runs.append((image, command, user))
        result = self.results.pop(0)
        for line in result.output.splitlines():
            on_line(line)
        return result

    def start(self, image, command, *, environment):
        self.started.append((image, command, environment))
        return self.container


def answer(status=200, *, json=None, text="", content=b""):
    return SimpleNamespace(ok=status < 400, status_code=status, json=lambda: json, text=text, content=content)


def http(answers):
    """A `requests.get` stand-in: answers per path, the last one repeating."""
    calls = []

    def get(url, timeout):
        calls.append(url)
        path = "/" + url.split("/", 3)[3]
        queue = answers[path]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    get.calls = calls
    return get


def test_checks_run_in_order_and_the_first_failure_names_its_check():
    checks = [ImageCheck(name="first", command=("true",)), ImageCheck(name="umask", command=("bash",),
                                                                      values={"umask": "0002"}),
              ImageCheck(name="never", command=("true",))]
    engine = FakeEngine([RunResult(0, ""), RunResult(0, "umask=0022")])
    said, lines = [], []
    with pytest.raises(VerificationFailed, match=r"check 'umask' failed: umask: '0022', expected '0002'"):
        verify.run_checks(engine, IMAGE, checks, on_line=lines.append, say=said.append)
    assert [run[1] for run in engine.runs] == [("true",), ("bash",)]  # the third never ran
    assert said[0] == "check first: true" and lines == ["umask=0022"]


def test_passing_checks_are_reported_with_their_exit_codes():
    checks = [ImageCheck(name="no command", command=None, exit_code=2)]
    results = verify.run_checks(FakeEngine([RunResult(2, "")]), IMAGE, checks, on_line=print, say=print)
    assert results == [{"check": "no command", "passed": True, "exit_code": 2}]


def test_the_api_server_passes_once_its_metadatabase_is_healthy_and_the_ui_is_served():
    container = FakeContainer(["running"] * 10)
    engine = FakeEngine(container=container)
    get = http({
        "/api/v2/monitor/health": [answer(503), answer(json={"metadatabase": {"status": "healthy"},
                                                             "scheduler": {"status": "unhealthy"}})],
        "/": [answer(text=UI_PAGE)], "/static/assets/index-1.js": [answer(content=b"js")],
    })
    said = []
    verify.check_api_server(engine, IMAGE, say=said.append, get=get, sleep=lambda s: None)
    assert engine.started[0][1] == ["api-server", "--port", "8080"]
    assert engine.started[0][2]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert get.calls[0] == "http://172.17.0.9:8080/api/v2/monitor/health"
    assert any("HTTP 503" in line for line in said) and said[-1].startswith("UI served: / loads static/assets")
    assert container.removed


def test_an_api_server_that_exits_fails_at_once_with_its_logs():
    container = FakeContainer(["running", "running", "exited"])
    get = http({"/api/v2/monitor/health": [answer(503)]})
    with pytest.raises(VerificationFailed, match="api-server exited before answering:\nImportError: no fab"):
        verify.check_api_server(FakeEngine(container=container), IMAGE, say=print, get=get, sleep=lambda s: None)
    assert len(get.calls) == 1 and container.removed


def test_an_api_server_that_never_gets_healthy_fails_naming_the_component():
    container = FakeContainer(["running"] * 100)
    get = http({"/api/v2/monitor/health": [answer(json={"metadatabase": {"status": "unhealthy"}})]})
    with pytest.raises(VerificationFailed, match=r"within 9s: .*failed 3 times: metadatabase is unhealthy"):
        verify.check_api_server(FakeEngine(container=container), IMAGE, say=print, get=get, sleep=lambda s: None,
                                timeout=9, interval=3)
    assert len(get.calls) == 3 and container.removed


def test_a_ui_that_is_not_compiled_in_fails():
    container = FakeContainer(["running"] * 10)
    get = http({"/api/v2/monitor/health": [answer(json={"metadatabase": {"status": "healthy"}})],
                "/": [answer(text="<html>no assets</html>")]})
    with pytest.raises(VerificationFailed, match="does not serve the compiled UI at /"):
        verify.check_api_server(FakeEngine(container=container), IMAGE, say=print, get=get, sleep=lambda s: None)
