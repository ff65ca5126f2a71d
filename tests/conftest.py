"""Session-wide setup. Stack tests use the real engine, registry, git remote and Airflow home that
`make stack` started; the unit tier needs none of them and gets a throw-away AIRFLOW_HOME."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import pytest

from tests.support import disk
from tests.support.streams import STREAM_VARIABLE, STREAMS, own_airflow_home, stream_of

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = Path(os.environ.get("STACK_DIR", REPO_ROOT / ".stack"))


def _load_stack_env() -> bool:
    env_file = STACK_DIR / "env"
    if not env_file.is_file():
        return False
    for line in env_file.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            os.environ.setdefault(key, shlex.split(value)[0] if value else "")
    return True


# Before anything imports airflow: its configuration is read once, at import.
STACK_ENV_LOADED = _load_stack_env()
# `make test` runs two streams at once (tests/run_streams.py); plain pytest, one process, runs them all.
STREAM = os.environ.get(STREAM_VARIABLE, "")
if STACK_ENV_LOADED and STREAM and STREAM != STREAMS[0]:
    _home = own_airflow_home(Path(os.environ["AIRFLOW_HOME"]), STREAM)
    os.environ["AIRFLOW_HOME"] = str(_home)
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home / 'airflow.db'}"
# The suite builds the regular PROD variant with two extras where Airflow's 33 are not the point (most
# tests: caches, promotion, sources, faults), and every CI image so; tests/dags/test_official_image_stack.py
# builds the real regular and slim images, with the defaults' extras, and checks them as Airflow's own
# image tests do. The product's defaults (include/defaults.toml) are what `make run` builds.
TEST_EXTRAS = "postgres,mysql"
os.environ.setdefault("IMAGE_FACTORY_AIRFLOW_EXTRAS", TEST_EXTRAS)
os.environ.setdefault("IMAGE_FACTORY_CI_AIRFLOW_EXTRAS", TEST_EXTRAS)
os.environ.setdefault("IMAGE_FACTORY_ADDITIONAL_PYTHON_DEPS", "")
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="image-factory-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The local stack's settings; fails (never skips) when the stack is not up: run `make stack`."""
    if not STACK_ENV_LOADED:
        pytest.fail(f"{STACK_DIR}/env is missing: the local stack is not set up (run `make stack`)")
    import requests

    registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    try:
        requests.get(f"http://{registry}/v2/", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        pytest.fail(f"the stack's registry at {registry} does not answer ({exc}); run `make stack`")
    return {k: v for k, v in os.environ.items() if k.startswith(("IMAGE_FACTORY_", "AIRFLOW", "STACK_DIR"))}


@pytest.fixture(scope="session")
def main_build(real_api):
    """build_images for branch main and every stack Python version, published: run once per session by
    whichever test needs main's images first (the build tests, the smoke runs, retag).

    It runs as `make run` runs it: triggered through the REST API of the stack's real Airflow, its
    builds in the ``image_builds`` pool at two slots, followed by polling the API, one build's log read
    while that build runs. So it is also the scheduler's evidence (tests/dags/test_scheduler_stack.py):
    the two Python versions' builds at once, never more than two, the log streaming. ``.output`` holds
    every task's log."""
    import time

    from tests.support import api_runs
    from tests.support.dag_runs import ARTIFACTS, stack_versions

    started = time.monotonic()
    api_runs.set_pool(real_api, 2)
    try:
        run_id = api_runs.trigger(real_api, {"branch": "main", "python_versions": stack_versions()})
        observed = api_runs.follow(real_api, [run_id], timeout=3600, read_live_log=True)
    finally:
        api_runs.set_pool(real_api, api_runs.default_pool_slots())
    result = api_runs.ApiRun(run_id, observed, api_runs.run_text(real_api, run_id, observed.tis[run_id]),
                             time.monotonic() - started)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "main-build.log").write_text(result.output)
    assert result.returncode == 0, api_runs.failures(observed) + "\n" + result.output[-8000:]
    return result


# The real PROD variants (the defaults' extras), in a repository of their own so main's images above stay
# the tests' light ones: built once, for the stack's first Python version, by whichever test needs them.
OFFICIAL_REPOSITORY = "official/airflow"


@pytest.fixture(scope="session")
def official_build(stack_env):
    from airflow_image_factory.clients.settings_loader import load_settings
    from tests.support.dag_runs import run_dag, stack_versions

    defaults = load_settings(env={})
    env = {"IMAGE_FACTORY_AIRFLOW_EXTRAS": defaults.airflow_extras,
           "IMAGE_FACTORY_ADDITIONAL_PYTHON_DEPS": defaults.additional_python_deps}
    conf = {"branch": "main", "repository": OFFICIAL_REPOSITORY, "python_versions": stack_versions()[:1],
            "variants": ["regular", "slim"]}
    result = run_dag("build_images", conf, env=env, name="official-build")
    assert result.returncode == 0, result.output[-8000:]
    return result


# ------------------------------------------------------------------------------ the real Airflow
@pytest.fixture(scope="session")
def real_airflow(stack_env):
    """The stack's real Airflow as `make run` starts it (include/stack/airflow_server.py up): PostgreSQL,
    api-server, scheduler, dag-processor, triggerer. Main's build runs there first (``main_build``);
    shared by every test that triggers or looks at runs there (API, UI)."""
    from tests.support.dag_runs import airflow_server

    started = airflow_server("up")
    assert started.returncode == 0, started.stdout + started.stderr
    yield started
    if "already running" not in started.stdout:  # a server `make run` started stays for its user
        airflow_server("down", timeout=120)


@pytest.fixture(scope="session")
def airflow_server_module():
    """include/stack/airflow_server.py as a module (its URL, its admin's name and password, its Api)."""
    import importlib.util

    from tests.support.dag_runs import AIRFLOW_SERVER_SCRIPT

    spec = importlib.util.spec_from_file_location("airflow_server_default", AIRFLOW_SERVER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def real_api(real_airflow, airflow_server_module):
    """A REST API session of the real Airflow's admin (a token from its auth manager); ``.base`` is its URL."""
    session = airflow_server_module.Api().session
    session.base = airflow_server_module.URL  # type: ignore[attr-defined]
    return session


# ------------------------------------------------------------------------------------------ disk use
# Modules marked `fresh_content` build images nothing else reuses (the nightly's new constraints): they
# run after every module that shares main's build cache, and give their disk back when they end
# (their DISPOSABLE_REPOSITORIES go from the registry and the engine; with less than RECLAIM_BELOW_MIB
# free, the registry's garbage is collected and the build cache emptied too).
DISK_LOG: list[str] = []
RECLAIM_BELOW_MIB = 30 * 1024


# A session build is set up inside the first test that needs it, and pytest-timeout counts set-up: that
# test gets the build's bound on top of its own. Beside the other two streams the official images took
# 27 min on 2 cores (2026-12-07), and their first test ran out of the 30 min every test has.
# (official_images: the deploy tests' way to official_build.)
SESSION_BUILDS = ("main_build", "official_build", "official_images")
FIRST_USER_TIMEOUT = 3600


# trylast: after -m and -k have deselected, so the bound goes to the first test that really runs
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    if STREAM:
        mine, others = [], []
        for item in items:
            (mine if stream_of(item.path) == STREAM else others).append(item)
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = mine
    items.sort(key=lambda item: item.get_closest_marker("fresh_content") is not None)  # stable sort
    for build in SESSION_BUILDS:
        first = next((item for item in items if build in getattr(item, "fixturenames", ())), None)
        if first is not None:
            first.add_marker(pytest.mark.timeout(FIRST_USER_TIMEOUT))


@pytest.fixture(scope="module", autouse=True)
def _disk_per_module(request):
    before = disk.used_mib()
    yield
    notes = []
    prefixes = tuple(getattr(request.module, "DISPOSABLE_REPOSITORIES", ()))
    if prefixes and STACK_ENV_LOADED:
        from airflow_image_factory.clients.registry import RegistryClient

        registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
        client = RegistryClient(registry)
        deleted = sum(disk.delete_repositories(client, prefix) for prefix in prefixes)
        notes.append(f"{deleted} manifests deleted")
        notes.append(f"{disk.remove_local_images(tuple(f'{registry}/{p}' for p in prefixes))} local images removed")
        # Collecting the registry's garbage and emptying the build cache take a minute or more: done when
        # the disk is short, so a roomy machine (CI's) does not pay for space nothing will ask for. The
        # collection stops the registry: never while another stream may be pushing to it.
        if disk.free_mib() < RECLAIM_BELOW_MIB:
            if not STREAM:
                notes.append(disk.collect_registry_garbage(STACK_DIR))
            notes.append(disk.empty_build_cache(os.environ.get("IMAGE_FACTORY_DOCKER_CLI") or "docker"))
        else:
            notes.append(f"more than {RECLAIM_BELOW_MIB // 1024} GiB free: registry garbage and build cache left")
    if request.node.get_closest_marker("stack") is None:
        return  # the unit tier writes next to nothing
    after = disk.used_mib()
    DISK_LOG.append(
        f"{request.module.__name__:<60} {before:>8} -> {after:>8} MiB used ({after - before:+} MiB), "
        f"{disk.free_mib()} MiB free{'; ' + '; '.join(notes) if notes else ''}"
    )


def pytest_terminal_summary(terminalreporter):
    if not DISK_LOG:
        return
    terminalreporter.section("disk used per module")
    for line in DISK_LOG:
        terminalreporter.write_line(line)
    artifacts = REPO_ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"disk-usage{'-' + STREAM if STREAM else ''}.txt").write_text("\n".join(DISK_LOG) + "\n")
