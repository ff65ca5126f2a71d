"""Every wait is bounded, and errors no retry can mend fail at once, naming the field.

- every task of every DAG has an ``execution_timeout`` that is one of the ``timeout_*_minutes`` settings;
- a missing branch, an unreadable source repository, a missing Python base image and a registry that
  does not accept connections each fail the task with ``AirflowFailException`` (no retry) within
  seconds, the message naming the field; what may pass (a 503, a git timeout) stays retryable.

Git remotes are bare repositories on disk, registries loopback servers (a closed port for one that is
down); nothing here needs the stack.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import (
    RegistryUnavailable,
    SettingsError,
    SourceRepositoryError,
    SourceTreeInvalid,
)
from airflow_image_factory.policy.request import validate_request
from airflow_image_factory.policy.settings import TIME_BOUNDS
from airflow_image_factory.tasks import groups as tasks
from airflow_image_factory.tasks import operators

pytestmark = pytest.mark.timeout(120)

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
# What the README promises for a down registry, a bad branch or repository: seconds, not a retry later.
FAST = 5.0


# ------------------------------------------------------------------------------- execution_timeout


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR), safe_mode=False)


def _bounds() -> dict[timedelta, str]:
    settings = load_settings()
    return {timedelta(minutes=getattr(settings, name)): name for name in TIME_BOUNDS}


def _unbounded(dag) -> list[str]:
    bounds = _bounds()
    return [f"{task.task_id} ({task.execution_timeout})" for task in dag.tasks if task.execution_timeout not in bounds]


def test_the_dags_load(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_every_task_has_an_execution_timeout_from_the_settings(dagbag, path):
    """A hung step must not hold a worker and a pool slot without bound. The DAG's own small tasks get
    theirs from ``default_args=tasks.dag_default_args(SETTINGS)``; the operators size their own."""
    dags = [dag for dag in dagbag.dags.values() if Path(dag.fileloc) == path]
    assert dags, f"{path.name} defines no DAG"
    for dag in dags:
        unbounded = _unbounded(dag)
        assert not unbounded, (
            f"{dag.dag_id}: {', '.join(unbounded)} have no execution_timeout from the timeout_*_minutes "
            "settings (pass default_args=dag_default_args(SETTINGS) from airflow_image_factory.tasks.groups)"
        )


def test_each_step_is_sized_by_its_own_setting(dagbag):
    settings = load_settings()

    def minutes(name: str) -> timedelta:
        return timedelta(minutes=getattr(settings, name))

    build = dagbag.dags["build_images"].task_dict
    expected = {
        "python.build_ci": "timeout_build_minutes",
        "python.build_prod": "timeout_build_minutes",
        "python.verify_ci": "timeout_verify_minutes",
        "python.verify_prod": "timeout_verify_minutes",
        "python.push_ci": "timeout_push_minutes",
        "python.python_base": "timeout_push_minutes",
        "promote_latest": "timeout_promote_minutes",
        "tidy_engine": "timeout_short_minutes",
        "validate": "timeout_short_minutes",
        "resolve_sha": "timeout_short_minutes",
        "check_publishing": "timeout_short_minutes",
        "report": "timeout_short_minutes",
    }
    for task_id, setting in expected.items():
        assert build[task_id].execution_timeout == minutes(setting), task_id
    nightly = dagbag.dags["nightly_images"].task_dict
    checks = [t for t in nightly.values() if t.task_id.endswith(".check_for_updates")]
    commits = [t for t in nightly.values() if t.task_id.endswith(".commit_constraints")]
    assert checks and all(t.execution_timeout == minutes("timeout_verify_minutes") for t in checks)
    assert commits and all(t.execution_timeout == minutes("timeout_push_minutes") for t in commits)


def test_a_bound_comes_from_the_environment_and_an_explicit_one_wins(monkeypatch):
    monkeypatch.setenv("IMAGE_FACTORY_TIMEOUT_BUILD_MINUTES", "7")
    build = operators.BuildImageOperator(task_id="b", kind="ci", build_request={}, python="3.11", python_base=None)
    assert build.execution_timeout == timedelta(minutes=7)
    explicit = operators.BuildImageOperator(task_id="c", kind="ci", build_request={}, python="3.11", python_base=None,
                                            execution_timeout=timedelta(minutes=3))
    assert explicit.execution_timeout == timedelta(minutes=3)


def test_the_sensor_is_bounded_past_its_own_wait(monkeypatch):
    from airflow_image_factory.tasks.sensors import DEFERRAL_TIMEOUT_MARGIN, ImageAvailableSensor

    sensor = ImageAvailableSensor(task_id="wait", candidates=[{"registry": "localhost:5000"}], repository="r",
                                  branch="main", python="3.11", timeout=600)
    short = timedelta(minutes=load_settings().timeout_short_minutes)
    assert sensor.execution_timeout == timedelta(seconds=600 + DEFERRAL_TIMEOUT_MARGIN) + short


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"IMAGE_FACTORY_TIMEOUT_SHORT_MINUTES": "0"}, "timeout_short_minutes must be at least 1"),
        ({"IMAGE_FACTORY_GIT_LS_REMOTE_TIMEOUT": "0"}, "git_ls_remote_timeout must be at least 1"),
        ({"IMAGE_FACTORY_TIMEOUT_PROMOTE_MINUTES": "30"}, r"timeout_promote_minutes \(30\) must be longer than "
                                                          r"promotion_lock_timeout \(1800 s\)"),
    ],
)
def test_bounds_that_would_break_every_run_are_refused(overrides, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(env=overrides)


# ------------------------------------------------------------------------ errors no retry can mend


@pytest.fixture
def settings_now(monkeypatch):
    """``run_settings`` without a Variable; ``env`` adds IMAGE_FACTORY_* overrides."""
    env: dict[str, str] = {}

    def current():
        return load_settings(env=env)

    monkeypatch.setattr(operators, "run_settings", current)
    monkeypatch.setattr(tasks, "run_settings", current)
    return env


@pytest.fixture
def source_repo(tmp_path) -> str:
    """A bare repository with one commit on main."""
    bare, work = tmp_path / "source.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text("x\n")
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "-C", str(work), "add", "README"], check=True)
    subprocess.run(["git", "-C", str(work), *identity, "commit", "-q", "-m", "one"], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", str(bare), "HEAD:refs/heads/main"], check=True)
    return str(bare)


def _request(settings_env: dict[str, str], **conf) -> dict:
    return validate_request({"python_versions": ["3.11"], **conf}, load_settings(env=settings_env)).to_dict()


def _fails_fast(call, match: str) -> AirflowFailException:
    started = time.monotonic()
    with pytest.raises(AirflowFailException, match=match) as error:
        call()
    assert time.monotonic() - started < FAST, f"took {time.monotonic() - started:.1f}s"
    return error.value


def test_a_branch_that_does_not_exist_fails_at_once_naming_the_field(settings_now, source_repo):
    request = _request(settings_now, branch="nope", source_repo=source_repo)
    _fails_fast(lambda: tasks.resolve_sha.function(request), rf"^branch: 'nope' does not exist in {source_repo}$")


def test_a_commit_on_a_branch_that_does_not_exist_fails_at_once(settings_now, source_repo):
    request = _request(settings_now, branch="nope", source_repo=source_repo, commit_sha="a" * 40)
    _fails_fast(lambda: tasks.resolve_sha.function(request), "^branch: 'nope' does not exist")


def test_a_source_repository_that_cannot_be_read_fails_at_once_with_gits_reason(settings_now, tmp_path):
    missing = str(tmp_path / "missing.git")
    request = _request(settings_now, branch="main", source_repo=missing)
    error = _fails_fast(lambda: tasks.resolve_sha.function(request),
                        rf"^source_repo: cannot read {missing}: .*does not appear to be a git repository$")
    assert "\n" not in str(error)


def test_the_branch_of_an_existing_repository_resolves(settings_now, source_repo):
    request = _request(settings_now, branch="main", source_repo=source_repo)
    assert len(tasks.resolve_sha.function(request)["commit_sha"]) == 40


class _Registry:
    """A loopback registry that answers ``GET /v2/`` and has no manifests at all."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                status = 200 if self.path == "/v2/" else 404
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.end_headers()

            do_GET = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def empty_registry():
    registry = _Registry()
    yield registry
    registry.close()


@pytest.fixture
def closed_port() -> str:
    """``127.0.0.1:<port>`` where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_a_missing_python_base_image_fails_at_once_naming_it(settings_now, empty_registry):
    settings_now["IMAGE_FACTORY_PYTHON_BASE_MIRROR"] = f"{empty_registry.host}/library/python"
    request = _request(settings_now, registry=empty_registry.host)
    step = operators.PreparePythonBaseOperator(task_id="python_base", build_request=request, python="3.11")
    _fails_fast(lambda: step.execute({}), rf"^python base image: {empty_registry.host}/library/python:"
                                          r"3\.11-slim-bookworm not found \(python_versions 3\.11\)$")


def test_a_registry_that_refuses_connections_fails_the_first_registry_task_at_once(settings_now, closed_port):
    request = _request(settings_now, registry=closed_port, push=True)
    error = _fails_fast(lambda: tasks.check_publishing.function(request),
                        rf"^registry: registry {closed_port} does not accept connections \(Connection refused")
    assert "not retried" in str(error)


def test_a_push_to_a_registry_that_refuses_connections_fails_at_once(settings_now, closed_port):
    request = _request(settings_now, registry=closed_port, push=True, commit_sha="a" * 40)
    push = operators.PushImageOperator(task_id="push_ci", kind="ci", build_request=request, python="3.11")
    _fails_fast(lambda: push.execute({}), rf"^registry: registry {closed_port} does not accept connections")


def test_a_python_base_registry_that_refuses_connections_names_the_setting(settings_now, closed_port):
    settings_now["IMAGE_FACTORY_PYTHON_BASE_MIRROR"] = f"{closed_port}/library/python"
    request = _request(settings_now)
    step = operators.PreparePythonBaseOperator(task_id="python_base", build_request=request, python="3.11")
    _fails_fast(lambda: step.execute({}), rf"^python_base_mirror: registry {closed_port} does not accept connections")


def test_a_refused_connection_after_the_clients_retries_is_not_retried_by_the_task(closed_port):
    with RegistryClient(closed_port, retries=1, backoff=0.01) as client, pytest.raises(RegistryUnavailable) as error:
        client.ping()
    converted = operators.fail_at_once(error.value)
    assert isinstance(converted, AirflowFailException)
    assert str(converted).startswith(f"registry: registry {closed_port} unavailable")


def test_what_may_pass_stays_retryable():
    busy = RegistryUnavailable("registry r unavailable: GET /v2/ failed after 6 tries; last status 503", status=503)
    slow = SourceRepositoryError("git ls-remote --heads of git://h/x timed out after 30s")
    assert operators.fail_at_once(busy) is busy
    assert operators.fail_at_once(slow) is slow


def test_invalid_sources_are_permanent_and_name_the_field():
    converted = operators.fail_at_once(SourceTreeInvalid("./pyproject.toml has no [project] name"))
    assert isinstance(converted, AirflowFailException)
    assert str(converted) == "source_repo: ./pyproject.toml has no [project] name"


def test_every_operator_of_the_package_fails_at_once_on_a_permanent_error(settings_now):
    """The conversion is in ImageFactoryOperator, so subclasses elsewhere (release, deploy) have it too."""
    from airflow_image_factory.exceptions import BaseImageMissing

    class Step(operators.ImageFactoryOperator):
        def execute(self, context):
            raise BaseImageMissing("python base image: r/python:3.11-slim-bookworm not found (python_versions 3.11)")

    with pytest.raises(AirflowFailException, match=r"^python base image: r/python"):
        Step(task_id="s", build_request={}).execute({})


def test_the_smoke_steps_are_sized_by_the_smoke_setting(dagbag):
    settings = load_settings()
    smoke = dagbag.dags["smoke_deploy"].task_dict
    deploys = [t for t in smoke.values() if type(t).__name__ == "SmokeDeployOperator"]
    assert deploys and all(t.execution_timeout == timedelta(minutes=settings.timeout_smoke_minutes) for t in deploys)


def test_the_nightly_check_of_a_base_the_upstream_lacks_is_permanent_and_names_the_python():
    from airflow_image_factory.exceptions import BaseImageMissing
    from airflow_image_factory.policy.naming import ImageName
    from airflow_image_factory.tasks.nightly_operators import CheckForUpdatesOperator

    class NoSuchImage:  # a registry client fake: the upstream has no such tag
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def manifest_digest(self, path, tag):
            return None

    class Hook:
        def get_conn(self):
            return NoSuchImage()

    operator = CheckForUpdatesOperator(task_id="check", build_request={})
    operator.registry_hook = lambda settings, registry=None: Hook()  # type: ignore[method-assign]
    upstream = ImageName("docker.io", "library/python", "3.19-slim-bookworm")
    with pytest.raises(BaseImageMissing, match=r"3\.19-slim-bookworm not found \(python_versions 3\.19\)") as info:
        operator._base_findings(load_settings(), "3.19", upstream, upstream)
    assert info.value.permanent
