"""The DAG-wiring helpers of tasks.py: public Airflow API only, the DAG taken from a task made in it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, task

from airflow_image_factory.tasks.groups import dag_of, fail_run_if_a_task_failed, run_last, task_ids_so_far

REPO_ROOT = Path(__file__).resolve().parents[2]


@task
def _produce() -> int:
    return 1


def _dag_with(*task_ids: str) -> tuple[DAG, dict[str, EmptyOperator]]:
    with DAG("wiring") as dag:
        tasks = {task_id: EmptyOperator(task_id=task_id) for task_id in task_ids}
    return dag, tasks


def test_dag_of_an_operator_a_task_output_and_a_mapped_output():
    with DAG("wiring") as dag:
        operator = EmptyOperator(task_id="a")
        output = _produce()
        mapped = output.map(lambda value: value)
    assert dag_of(operator) is dag
    assert dag_of(output) is dag
    assert dag_of(mapped) is dag


def test_run_last_needs_no_dag_being_defined():
    # Outside any `with DAG` / @dag body: Airflow's current-DAG context is empty; the DAG comes from `last`.
    dag, tasks = _dag_with("early", "build", "push", "tidy")
    before = {"early"}
    run_last(tasks["tidy"], after_all_since=before)
    assert tasks["tidy"].upstream_task_ids == {"build", "push"}
    assert set(dag.task_dict) == {"early", "build", "push", "tidy"}


def test_task_ids_so_far_reads_the_dag_of_the_given_task():
    with DAG("wiring"):
        output = _produce()
        EmptyOperator(task_id="a")
    assert task_ids_so_far(output) == {"_produce", "a"}


def test_the_watcher_is_downstream_of_every_task_of_its_dag():
    with DAG("wiring") as dag:
        EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
        watcher = fail_run_if_a_task_failed()
    assert watcher.operator.upstream_task_ids == set(dag.task_dict) - {watcher.operator.task_id}


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize(
    "path",
    sorted([*(REPO_ROOT / "plugins" / "airflow_image_factory").rglob("*.py"), *(REPO_ROOT / "dags").glob("*.py")]),
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_no_private_airflow_module_is_imported(path):
    private = sorted(m for m in _imported_modules(path) if m.startswith("airflow") and "._" in m)
    assert not private, f"{path.name} imports Airflow's private {private}"


def test_a_nightly_rebuild_is_narrowed_to_the_versions_that_changed():
    """check_for_updates decides per version; the rebuild builds, verifies and publishes those only."""
    from airflow_image_factory.tasks.groups import rebuild_request, versions_of

    plan = {"rebuild": ["3.13"], "constraints": {"3.13": "a==1\n"}, "decisions": []}
    request = {"branch": "main", "python_versions": ["3.11", "3.13"], "upgrade_to_newer_dependencies": True}
    narrowed = rebuild_request.function(request, plan)
    assert narrowed["python_versions"] == ["3.13"] == versions_of.function(plan)
    # the resolved set is installed as constraints: no second, possibly different, eager resolution
    assert narrowed["upgrade_to_newer_dependencies"] is False
    assert narrowed["branch"] == "main" and request["python_versions"] == ["3.11", "3.13"]


def test_a_version_outcome_carries_the_digest_of_a_reused_prod_build_stage():
    from airflow_image_factory.tasks.groups import version_outcome

    ci, prod, stage = (f"sha256:{c * 64}" for c in "abc")
    built = version_outcome.function("3.11", ci, {"prod": prod, "prod-build": {"reused": None, "digest": None}})
    assert built["digests"] == {"ci": ci, "prod": prod}
    reused = version_outcome.function(
        "3.11", ci, {"prod": prod, "prod-build": {"reused": "reg/prod-build:latest", "digest": stage}})
    assert reused["digests"] == {"ci": ci, "prod": prod, "prod-build": stage}


def test_a_version_outcome_leaves_out_the_variants_the_run_skipped():
    from airflow_image_factory.tasks.groups import version_outcome

    ci, slim = (f"sha256:{c * 64}" for c in "ad")
    # regular not requested: its push and build were skipped, their XComs resolve to None
    outcome = version_outcome.function(
        "3.11", ci, {"prod": None, "prod-build": None, "prod-slim": slim, "prod-slim-build": {"reused": None}})
    assert outcome["digests"] == {"ci": ci, "prod-slim": slim}


def _constraints_repository(tmp_path, files_by_branch: dict[str, dict[str, str]]) -> str:
    """A bare repository with one commit of the given files on each named branch (real git)."""
    import subprocess

    remote = tmp_path / "source.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    from airflow_image_factory.clients.git import BranchFiles

    for branch, files in files_by_branch.items():
        with BranchFiles(str(remote), branch) as checkout:
            checkout.commit_and_push(files, message=f"{branch}: constraints", author="Tests <tests@example.invalid>")
    return str(remote)


def _build_request(branch: str, remote: str) -> dict:
    from airflow_image_factory.clients.settings_loader import load_settings
    from airflow_image_factory.policy.request import validate_request

    conf = {"branch": branch, "python_versions": ["3.11", "3.13"], "source_repo": remote}
    return validate_request(conf, load_settings(env={})).to_dict()


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        # a branch with constraints of its own for one version: that one's, the other from main's
        ("v3-3-test", {"3.11": "a==3\n", "3.13": "a==1\n"}),
        ("feature", {"3.11": "a==1\n", "3.13": "a==1\n"}),  # none of its own: main's
        ("main", {"3.11": "a==1\n", "3.13": "a==1\n"}),
    ],
)
def test_a_branch_without_constraints_of_its_own_installs_the_default_branchs(tmp_path, monkeypatch, branch,
                                                                               expected):
    from airflow_image_factory.clients.settings_loader import load_settings
    from airflow_image_factory.tasks import groups

    remote = _constraints_repository(tmp_path, {
        "constraints-main": {"constraints-3.11.txt": "a==1\n", "constraints-3.13.txt": "a==1\n"},
        "constraints-v3-3-test": {"constraints-3.11.txt": "a==3\n"},
    })
    monkeypatch.setattr(groups, "run_settings", lambda: load_settings(env={}))
    assert groups.branch_constraints.function(_build_request(branch, remote)) == expected


def test_a_version_found_on_no_constraints_branch_installs_without_and_says_so(tmp_path, monkeypatch, caplog):
    from airflow_image_factory.clients.settings_loader import load_settings
    from airflow_image_factory.tasks import groups

    remote = _constraints_repository(tmp_path, {"constraints-main": {"constraints-3.11.txt": "a==1\n"}})
    monkeypatch.setattr(groups, "run_settings", lambda: load_settings(env={}))
    with caplog.at_level("WARNING"):
        assert groups.branch_constraints.function(_build_request("feature", remote)) == {"3.11": "a==1\n"}
    assert "No constraints-3.13.txt on constraints-feature or constraints-main" in caplog.text
