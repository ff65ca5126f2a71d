"""Every DAG file loads, looks nothing up and calls nobody while parsed, and is well-formed.

New DAG files are picked up automatically: every later DAG inherits these checks.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))


class ParseTimeLookup(AssertionError):
    pass


def _forbid(what: str):
    def refuse(*args, **kwargs):
        raise ParseTimeLookup(f"{what} called while parsing DAG files")

    return refuse


@pytest.fixture(scope="module")
def dagbag():
    """Parse dags/ with connection, variable, network and subprocess access refused."""
    import airflow.sdk
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models import Connection, Variable

    patch = pytest.MonkeyPatch()
    patch.setattr(airflow.sdk.Variable, "get", _forbid("Variable.get"))
    patch.setattr(airflow.sdk.Connection, "get", _forbid("Connection.get"))
    patch.setattr(airflow.sdk.BaseHook, "get_connection", _forbid("BaseHook.get_connection"))
    patch.setattr(Variable, "get", _forbid("Variable.get"))
    patch.setattr(Connection, "get_connection_from_secrets", _forbid("Connection lookup"))
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family == socket.AF_UNIX:  # SQLite and logging need none, but stay out of their way
            return real_connect(sock, address)
        raise ParseTimeLookup(f"network connection to {address} while parsing DAG files")

    patch.setattr(socket.socket, "connect", connect)
    patch.setattr(subprocess, "Popen", _forbid("subprocess.Popen"))
    try:
        bag = DagBag(dag_folder=str(DAGS_DIR), safe_mode=False)
    finally:
        patch.undo()
    return bag


def test_there_are_dag_files():
    assert DAG_FILES, "no DAG files found"


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_each_file_defines_a_dag(dagbag, path):
    assert any(Path(dag.fileloc) == path for dag in dagbag.dags.values()), f"{path.name} defines no DAG"


def test_every_dag_is_well_formed(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.owner and dag.owner != "airflow", f"{dag_id} has the default owner"
        for task in dag.tasks:
            # Validation fails the same way every time: retrying it would only delay the error.
            if task.task_id.rsplit(".", 1)[-1].startswith("validate"):
                assert task.retries == 0, f"{dag_id}.{task.task_id} retries a rejected request"
                continue
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_a_failed_task_fails_the_run_even_when_a_task_runs_regardless(dagbag):
    """Airflow judges a run by its leaves: a leaf that runs whatever happened (report, tidy_engine)
    and succeeds would mark a run whose validation failed as a success. Such DAGs need the watcher
    downstream of every task; teardowns are exempt (Airflow leaves them out of the run's state)."""
    for dag_id, dag in dagbag.dags.items():
        runs_regardless = [t.task_id for t in dag.tasks
                           if t.trigger_rule in ("all_done", "none_failed", "one_success", "always")
                           and not t.is_teardown]
        if not runs_regardless:
            continue
        watcher = dag.task_dict.get("fail_run_if_a_task_failed")
        assert watcher is not None, f"{dag_id}: {runs_regardless} run regardless, and nothing fails the run"
        assert set(dag.task_dict) - {watcher.task_id} == watcher.upstream_task_ids, dag_id


def test_build_images_shape(dagbag):
    dag = dagbag.dags["build_images"]
    assert dag.schedule is None or dag.timetable.summary in ("None", None)
    params = dag.params
    for name in ("branch", "python_versions", "registry", "repository", "source_repo", "commit_sha", "cache",
                 "push", "upgrade_to_newer_dependencies", "airflow_version", "test_command"):
        assert name in params, name
    group_tasks = {t.task_id for t in dag.tasks if t.task_id.startswith("python.")}
    assert {"python.build_ci", "python.build_prod", "python.verify_prod", "python.push_ci"} <= group_tasks
    promote = dag.task_dict["promote_latest"]
    assert promote.trigger_rule == "all_success"
    # promotion waits on every per-version outcome
    assert "python.version_outcome" in promote.upstream_task_ids
    # the engine is tidied last, after every build, check, push and the promotion, however they ended: a
    # teardown (Airflow's own "runs whatever happened", left out of the run's state)
    tidy = dag.task_dict["tidy_engine"]
    assert tidy.is_teardown and tidy.trigger_rule == "all_done_setup_success"
    upstream = tidy.upstream_task_ids
    assert {"promote_latest", "report", "python.push_ci", "python.push_prod", "python.build_ci"} <= upstream


@pytest.mark.parametrize("dag_id", ["build_images", "nightly_images", "release_images"])
def test_every_pushed_image_is_attested_before_anything_is_published(dagbag, dag_id):
    """Each attest step follows its image's push (or staging) and comes before the version's outcome, so no
    name moves until the evidence of every tested digest is stored; the published names are read back."""
    tasks = dagbag.dags[dag_id].task_dict
    attests = [t for t in tasks.values() if t.task_id.rsplit(".", 1)[-1].startswith("attest_")]
    pushes = {"build_images": ("push_ci", "push_prod", "push_prod_slim"),
              "nightly_images": ("push_ci", "push_prod", "push_prod_slim"),
              "release_images": ("stage_prod", "stage_prod_slim")}[dag_id]
    assert attests
    for task in attests:
        prefix, _, name = task.task_id.rpartition(".")
        pushed = f"{prefix}.{name.replace('attest_', 'stage_' if dag_id == 'release_images' else 'push_')}"
        assert pushed in task.upstream_task_ids, task.task_id
        after = task.get_flat_relative_ids(upstream=False)
        assert any(t.endswith(("version_outcome", ".staged")) for t in after), task.task_id
    names = {t.task_id.rsplit(".", 1)[-1] for t in attests}
    assert names == {p.replace("push_", "attest_").replace("stage_", "attest_") for p in pushes}
    if dag_id != "release_images":
        verified = [t for t in tasks.values() if t.task_id.endswith("verify_published")]
        assert verified and all(any(u.endswith("promote_latest") for u in t.upstream_task_ids) for t in verified)


def test_release_tidies_after_publishing(dagbag):
    dag = dagbag.dags["release_images"]
    tidy = dag.task_dict["tidy_engine"]
    assert tidy.is_teardown and tidy.trigger_rule == "all_done_setup_success"
    assert {"publish", "python.build_prod", "python.stage_prod"} <= tidy.upstream_task_ids


def test_nightly_tidies_each_branch_after_its_constraints_commit(dagbag):
    dag = dagbag.dags["nightly_images"]
    tidies = [t for t in dag.tasks if t.task_id.endswith(".tidy_engine")]
    assert tidies
    for tidy in tidies:
        assert tidy.is_teardown
        branch = tidy.task_id.rsplit(".", 1)[0]
        assert {f"{branch}.commit_constraints", f"{branch}.promote_latest"} <= tidy.upstream_task_ids
        assert not any(u.startswith(f"{branch}.check_for_updates") for u in tidy.upstream_task_ids)


def test_the_nightly_probes_the_upgrades_in_rounds_before_the_rebuild(dagbag):
    """Per branch: bisection_round_N → probe_upgrades_N (mapped, in the build pool) for every round of the
    setting, each round reading every earlier round's results; the verdict waits for all of them however
    they ended, and the rebuild installs what it decided. The rounds wait for the gate (nothing to rebuild:
    nothing probed) and stay out of the engine's tidying (a probe removes its own image)."""
    from airflow_image_factory.clients.settings_loader import load_settings

    settings = load_settings()
    dag = dagbag.dags["nightly_images"]
    for branch in settings.nightly_branches:
        tasks = {t.task_id.removeprefix(f"{branch}."): t for t in dag.tasks if t.task_id.startswith(f"{branch}.")}
        rounds = sorted(int(t.rsplit("_", 1)[1]) for t in tasks if t.startswith("bisection_round_"))
        assert rounds == list(range(settings.bisection_rounds))
        for number in rounds:
            probe = tasks[f"probe_upgrades_{number}"]
            assert probe.is_mapped and probe.pool == settings.build_pool
            assert f"{branch}.bisection_round_{number}" in probe.upstream_task_ids
            earlier = {f"{branch}.probe_upgrades_{n}" for n in range(number)}
            assert earlier <= tasks[f"bisection_round_{number}"].upstream_task_ids
            assert f"{branch}.rebuild_request" in tasks[f"bisection_round_{number}"].upstream_task_ids
        verdict = tasks["bisection_verdict"]
        assert verdict.trigger_rule == "all_done"
        assert {f"{branch}.probe_upgrades_{n}" for n in rounds} <= verdict.upstream_task_ids
        assert f"{branch}.bisection_verdict" in tasks["upgraded_constraints"].upstream_task_ids
        assert not any("bisection" in u or "probe_upgrades" in u for u in tasks["tidy_engine"].upstream_task_ids)


def _is_validate(task_id: str) -> bool:
    return task_id.rsplit(".", 1)[-1].startswith("validate")


def test_every_task_waits_for_the_conf_check(dagbag):
    """A rejected conf stops everything: every task is downstream of a validate task (the nightly's
    released-images check asks the registry, so it must not run on a conf nobody checked)."""
    for dag_id, dag in dagbag.dags.items():
        checks = {t.task_id for t in dag.tasks if _is_validate(t.task_id)}
        assert checks, f"{dag_id} has no validate task"
        for task in dag.tasks:
            if task.task_id in checks:
                continue
            assert checks & task.get_flat_relative_ids(upstream=True), f"{dag_id}.{task.task_id} runs unchecked"


def test_the_nightly_checks_its_conf_before_every_branch_and_the_registry(dagbag):
    dag = dagbag.dags["nightly_images"]
    gate = dag.task_dict["validate_conf"]
    assert gate.retries == 0 and not gate.upstream_task_ids
    downstream = gate.get_flat_relative_ids(upstream=False)
    assert set(dag.task_dict) - {"validate_conf"} == downstream
    assert "released_images_to_rebuild" in gate.downstream_task_ids


def _dag_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_integrity_{name}", DAGS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_context(monkeypatch):
    """Call a DAG file's validate task body directly, with ``conf`` as the run's conf."""
    from types import SimpleNamespace

    import airflow_image_factory.tasks.operators as operators
    from airflow_image_factory.clients.settings_loader import load_settings

    monkeypatch.setattr(operators, "run_settings", lambda: load_settings(env={}))

    def call(module, task_name: str, conf):
        monkeypatch.setattr(module, "get_current_context", lambda: {"dag_run": SimpleNamespace(conf=conf)})
        return getattr(module, task_name).function()

    return call


def test_the_release_validate_task_asks_the_index_once_and_only_for_a_valid_request(run_context, monkeypatch):
    import airflow_image_factory.clients.index as index
    from airflow_image_factory.clients.signing import generate_key_pair
    from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests

    asked = []
    monkeypatch.setattr(index, "check_airflow_release", lambda version, **kw: asked.append((version, kw)))
    module = _dag_module("release_images")
    # without the evidence signing key a release is refused here, after the index lookup, before any build
    monkeypatch.delenv("AIRFLOW_CONN_IMAGE_FACTORY_SIGNING", raising=False)
    with pytest.raises(AirflowFailException, match=r"^signing_connection: no Airflow Connection 'image_factory_"):
        run_context(module, "validate_release", {"version": "3.3.2", "default_python": "3.12"})
    asked.clear()
    monkeypatch.setenv("AIRFLOW_CONN_IMAGE_FACTORY_SIGNING",
                       json.dumps({"conn_type": "generic", "password": generate_key_pair()[0]}))
    result = run_context(module, "validate_release", {"version": "3.3.2", "default_python": "3.12"})
    assert result["release"]["version"] == "3.3.2"
    assert asked == [("3.3.2", {"ca_bundle": ""})]
    with pytest.raises(InvalidBuildRequests, match="conf: must be an object"):
        run_context(module, "validate_release", ["3.3.2"])
    with pytest.raises(InvalidBuildRequests, match="version"):
        run_context(module, "validate_release", {"version": "03.3.2", "default_python": "3.12"})
    assert len(asked) == 1  # a rejected conf never reaches the index

    def missing(version, **kw):
        raise InvalidBuildRequest("version", f"{version} is not a release of apache-airflow")

    monkeypatch.setattr(index, "check_airflow_release", missing)
    with pytest.raises(InvalidBuildRequest, match=r"version: 3\.3\.3 is not a release"):
        run_context(module, "validate_release", {"version": "3.3.3", "default_python": "3.12"})


@pytest.mark.parametrize(
    ("dag_file", "task_name", "conf", "says"),
    [
        ("nightly_images", "validate_conf", ["main"], "conf: must be an object"),
        ("nightly_images", "validate_conf", {"branch": "main"}, "branch: is not a field of the nightly run"),
        ("nightly_images", "validate_conf", {"cache": "x" * 500}, "cache: "),
        ("retag_images", "validate_retag", "main", "conf: must be an object"),
        ("retag_images", "validate_retag", [], "conf: must be an object"),  # not taken for an empty conf
    ],
)
def test_dag_validate_tasks_refuse_bad_confs(run_context, dag_file, task_name, conf, says):
    from airflow_image_factory.exceptions import InvalidBuildRequests

    with pytest.raises(InvalidBuildRequests, match=says) as info:
        run_context(_dag_module(dag_file), task_name, conf)
    assert all(len(str(e)) < 300 for e in info.value.errors)


def test_the_nightly_validate_task_passes_a_good_conf(run_context):
    assert run_context(_dag_module("nightly_images"), "validate_conf", {"python_versions": ["3.11"]}) is None


@pytest.mark.parametrize("conf", [["main"], [], "main", 3, [["branch", "main"]]])
@pytest.mark.parametrize("branch", [None, "main"], ids=["build_images", "nightly_branch"])
def test_the_build_validate_task_refuses_a_conf_that_is_not_an_object(monkeypatch, conf, branch):
    # dict() of a list of pairs would make an object of it; a conf must be one already.
    from types import SimpleNamespace

    import airflow_image_factory.tasks.groups as tasks
    import airflow_image_factory.tasks.operators as operators
    from airflow_image_factory.clients.settings_loader import load_settings
    from airflow_image_factory.exceptions import InvalidBuildRequests

    monkeypatch.setattr(operators, "run_settings", lambda: load_settings(env={}))
    monkeypatch.setattr(tasks, "run_settings", lambda: load_settings(env={}), raising=False)
    monkeypatch.setattr(tasks, "get_current_context", lambda: {"dag_run": SimpleNamespace(conf=conf)})
    with pytest.raises(InvalidBuildRequests, match="conf: must be an object"):
        tasks.validate.function(branch=branch)


def test_every_task_body_maps_permanent_errors_one_way(dagbag):
    """Every @task body of every DAG goes through operators.fails_at_once (ImageFactoryOperator wraps each
    execute with it), so a permanent domain error fails the task at once the same way everywhere."""
    from airflow_image_factory.tasks.operators import fails_at_once

    wrapper_code = fails_at_once(lambda: None).__code__
    unwrapped = sorted(
        f"{dag_id}.{t.task_id}"
        for dag_id, dag in dagbag.dags.items()
        for t in dag.tasks
        if callable(getattr(t, "python_callable", None))
        and getattr(t.python_callable, "__code__", None) is not wrapper_code
    )
    assert not unwrapped, f"task bodies not wrapped by fails_at_once: {unwrapped}"
