"""Malformed and hostile confs: rejected before any build or push, within seconds, naming the field.

Three layers of proof:

- a table of confs run through exactly what a triggered run does first - the DAG's own Params
  (the trigger form's JSON schema, from the parsed DAG) and then its validate step - for
  build_images and, where they take a conf, the other DAGs (smoke_deploy shares build_images' params
  and validation; retag_images has its own). ``tests/airflow_image_factory/test_request.py`` holds
  the per-rule unit tests of the build request; this table is whole confs as a user or an attacker
  would send them, shell-injection attempts included;
- a handful of real ``airflow dags test`` runs (stack): the run fails at validation, no build task
  starts, a canary file a shell would have created does not exist, the registry is unchanged;
- a look at the code: no ``shell=True``, and no ``sh -c`` / ``bash -c`` whose script is built from
  a value, except the CI ``test_command``, which is a shell command by design (it runs inside the
  CI image's container, as the person who triggered the run asked).
"""

from __future__ import annotations

import ast
import copy
import os
import re
import time
from pathlib import Path

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import InvalidBuildRequest
from airflow_image_factory.policy.request import validate_request

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = {"python_versions": ["3.11"], "repository": "reliability/malformed"}

BUILD_CONFS = [
    ({"branch": "main; rm -rf /"}, "branch"),
    ({"branch": "$(id)"}, "branch"),
    ({"branch": "main\nrm -rf /"}, "branch"),
    ({"branch": "`id`"}, "branch"),
    ({"branch": "main&&id"}, "branch"),
    ({"branch": "--upload-pack=touch /tmp/x"}, "branch"),
    ({"branch": None}, "branch"),
    ({"python_versions": ["3.11", "$(id)"]}, "python_versions"),
    ({"python_versions": "3.11"}, "python_versions"),
    ({"registry": "127.0.0.1:5000/$(id)"}, "registry"),
    ({"registry": "user:secret@ghcr.io"}, "registry"),
    ({"repository": "Reliability/Malformed;id"}, "repository"),
    ({"repository": "../../etc"}, "repository"),
    ({"source_repo": "--upload-pack=touch /tmp/pwned"}, "source_repo"),
    ({"source_repo": "/work/main/.stack/source.git; id"}, "source_repo"),
    ({"source_repo": "ext::sh%20-c%20id"}, "source_repo"),  # git's ext:: transport runs a command
    ({"source_repo": "/srv/repo.git\n--upload-pack=id"}, "source_repo"),
    ({"commit_sha": "deadbeef; id"}, "commit_sha"),
    ({"commit_sha": "HEAD~1"}, "commit_sha"),
    ({"cache": "pulled; id"}, "cache"),
    ({"push": "true"}, "push"),
    ({"upgrade_to_newer_dependencies": "yes"}, "upgrade_to_newer_dependencies"),
    ({"airflow_version": "3.3.2 && curl evil.example"}, "airflow_version"),
    ({"airflow_version": "$(id)"}, "airflow_version"),
    ({"test_command": "pytest\x00rm"}, "test_command"),
    ({"test_command": "x" * 5000}, "test_command"),
    ({"naming": "slash;id"}, "naming"),
    ({"registy": "typo.example"}, "registy"),
]

RETAG_CONFS = [
    ({"source_branch": "main; rm -rf /", "target_branch": "v3-test"}, "source_branch"),
    ({"source_branch": "main", "target_branch": "$(id)"}, "target_branch"),
    ({"source_branch": "main", "target_branch": "v3\n-test"}, "target_branch"),
    ({"source_branch": "main", "target_branch": "main"}, "target_branch"),
    ({"source_branch": "main", "target_branch": "v3-test", "registry": "ghcr.io/`id`"}, "registry"),
    ({"source_branch": "main", "target_branch": "v3-test", "dry_run": "no"}, "dry_run"),
    ({"source_branch": "main", "target_branch": "Not A Branch"}, "target_branch"),
    ({"source_branch": "main", "target_branch": "v3-test", "repository": "Apache Airflow"}, "repository"),
    ({"source_branch": "main", "target_branch": "v3-test", "python_versions": ["2.7"]}, "python_versions"),
]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def _params_error(dag, conf: dict) -> str | None:
    """What the trigger form's schema says about ``conf``: the error text, or None when it passes."""
    params = copy.deepcopy(dag.params)
    try:
        for key, value in conf.items():
            if key in params:
                params[key] = value
        params.validate()
    except Exception as exc:  # ParamValidationError; Airflow wraps jsonschema's errors in it
        return str(exc)
    return None


def _rejection(dag, conf: dict, validator) -> str:
    """The error a triggered run stops with (params first, then the validate step), or fail."""
    if (message := _params_error(dag, conf)) is not None:
        return message
    try:
        validator(conf)
    except InvalidBuildRequest as exc:
        return str(exc)
    pytest.fail(f"{conf!r} was accepted")


def test_the_build_table_is_big_enough():
    assert len(BUILD_CONFS) >= 15


@pytest.mark.parametrize(("bad", "field"), BUILD_CONFS, ids=[f"{f}={v!r}"[:50] for c, f in BUILD_CONFS
                                                            for v in [c.get(f)]])
@pytest.mark.parametrize("dag_id", ["build_images", "smoke_deploy"])
def test_build_conf_is_rejected_naming_the_field(dags, dag_id, bad, field):
    if dag_id not in dags:
        pytest.skip(f"{dag_id} is not in dags/")
    settings = load_settings()
    started = time.monotonic()
    message = _rejection(dags[dag_id], {**BASE, **bad}, lambda conf: validate_request(conf, settings))
    assert time.monotonic() - started < 2
    assert field in message


@pytest.mark.parametrize(("conf", "field"), RETAG_CONFS, ids=[f for _, f in RETAG_CONFS])
def test_retag_conf_is_rejected_naming_the_field(dags, conf, field):
    if "retag_images" not in dags:
        pytest.skip("retag_images is not in dags/")
    from airflow_image_factory.policy.retag import validate_retag_request

    settings = load_settings()
    message = _rejection(dags["retag_images"], conf, lambda c: validate_retag_request(c, settings))
    assert field in message


# --------------------------------------------------------------------------- no value reaches a shell

SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env"}
# (file, the script argument's source) that are allowed to be built from a value, and why.
ALLOWED_SHELL_SCRIPTS = {
    # The CI test command is a shell command by design; it runs inside the CI image's container.
    ("plugins/airflow_image_factory/tasks/operators.py", "command"),
}


def _python_files() -> list[Path]:
    return sorted([*(REPO_ROOT / "plugins").rglob("*.py"), *(REPO_ROOT / "dags").rglob("*.py")])


def _shell_calls(source: str, rel: str):
    """(line, problem) for shell=True, os.system/popen, and ``[sh, -c, <not a literal>]`` argv lists."""
    tree = ast.parse(source, filename=rel)
    # A module-level name bound once to a string literal is a literal too (a fixed script kept apart).
    constants = {
        target.id
        for node in tree.body if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets if isinstance(target, ast.Name)
    }
    rebound = {
        target.id
        for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and not (node in tree.body and isinstance(node, ast.Assign))
    }
    literal_names = constants - rebound
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    yield node.lineno, "shell=True"
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "os" \
                    and func.attr in ("system", "popen"):
                yield node.lineno, f"os.{func.attr}"
        if isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) >= 3:
            first, second, script = node.elts[0], node.elts[1], node.elts[2]
            if (
                isinstance(first, ast.Constant) and first.value in SHELLS
                and isinstance(second, ast.Constant) and second.value in ("-c", "-lc", "-ec")
                and not (isinstance(script, ast.Constant) and isinstance(script.value, str))
                and not (isinstance(script, ast.Name) and script.id in literal_names)
                and (rel, ast.unparse(script)) not in ALLOWED_SHELL_SCRIPTS
            ):
                yield node.lineno, f"{first.value} -c {ast.unparse(script)}"


def test_no_value_reaches_a_shell_unquoted():
    problems = []
    for path in _python_files():
        rel = str(path.relative_to(REPO_ROOT))
        problems += [f"{rel}:{line}: {what}" for line, what in _shell_calls(path.read_text(), rel)]
    assert problems == []


def test_the_shell_check_can_fail():
    source = (
        'import subprocess, os\nsubprocess.run(f"git {x}", shell=True)\nos.system(x)\n'
        'cmd = ["bash", "-c", f"echo {branch}"]\nok = ["bash", "-c", "echo constant"]\n'
        'SCRIPT = "echo fixed"\nalso_ok = ("bash", "-c", SCRIPT)\n'
        'BUILT = "echo"\nBUILT += x\nnot_ok = ["bash", "-c", BUILT]\nnot_ok_either = ["sh", "-c", value]\n'
    )
    found = sorted(what for _, what in _shell_calls(source, "plugins/x.py"))
    assert found == ["bash -c BUILT", "bash -c f'echo {branch}'", "os.system", "sh -c value", "shell=True"]


def test_the_ci_test_command_goes_to_the_container_as_one_argv_item():
    """The one shell by design: the command is a single argv item of ``bash -c`` inside the CI image."""
    from airflow_image_factory.policy.request import BuildRequest
    from airflow_image_factory.tasks.operators import VerifyImageOperator

    request = validate_request({**BASE, "test_command": "pytest -k 'a or b'; echo $HOME"}, load_settings())
    op = VerifyImageOperator(task_id="t", kind="ci", build_request=BuildRequest.to_dict(request), python="3.11")
    [check] = op._ci_checks()
    assert list(check.command) == ["bash", "-c", "pytest -k 'a or b'; echo $HOME"]


# --------------------------------------------------------------------------- real runs (stack)

# Tasks that build, test, push, publish or commit something (group prefixes ignored).
_WORK = re.compile(r"(python_base|build|verify|push|promote|retag|commit|constraints|smoke|deploy|release)(_|$)")


def _stopped_at_validation(started: list[str]) -> bool:
    """No task that does work started (validation, reports and read-only checks may have)."""
    return not any(_WORK.match(t.rsplit(".", 1)[-1]) for t in started)


def _registry_snapshot(client) -> dict[str, list[str]]:
    # Everything a run with these confs could write is under the repository they name (naming.py
    # puts every image below it); other engineers' runs may write elsewhere meanwhile.
    return {r: sorted(client.list_tags(r)) for r in client.catalog() if r.startswith(BASE["repository"])}


@pytest.mark.stack
@pytest.mark.parametrize(
    ("dag_id", "bad", "field"),
    [
        # One of each layer per DAG as a real run (the table above holds the rest): validate's own rules,
        # git option injection, and the trigger form's schema.
        ("build_images", {"branch": "$(touch {canary})"}, "branch"),
        ("build_images", {"source_repo": "--upload-pack=touch {canary}"}, "source_repo"),
        ("build_images", {"push": "yes"}, "push"),  # stopped by the trigger form's schema: no task runs at all
        ("nightly_images", {"branch": "main; touch {canary}"}, "branch"),  # the nightly fixes its branches
        ("retag_images", {"source_branch": "main", "target_branch": "`touch {canary}`"}, "target_branch"),
    ],
    ids=["build-branch", "build-source_repo", "build-push", "nightly-branch",
         "retag-target_branch"],
)
def test_real_run_stops_at_validation(stack_env, tmp_path, dag_id, bad, field):
    from airflow_image_factory.clients.registry import RegistryClient
    from tests.support.dag_runs import run_dag

    if not (REPO_ROOT / "dags" / f"{dag_id}.py").is_file():
        pytest.skip(f"{dag_id} is not in dags/")
    canary = tmp_path / "pwned"
    conf = {k: v.format(canary=canary) if isinstance(v, str) else v for k, v in bad.items()}
    if dag_id != "retag_images":
        conf = {**BASE, **conf}
    client = RegistryClient(os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000"), retries=2)
    before = _registry_snapshot(client)
    run = run_dag(dag_id, conf, name=f"reliability-malformed-{dag_id}-{field}", timeout=300)
    assert run.returncode != 0
    assert field in run.output
    assert _stopped_at_validation(run.started_tasks()), run.started_tasks()
    assert "Built " not in run.output and "Pushed " not in run.output and "promoted " not in run.output
    assert run.seconds < 90  # the airflow CLI's own start-up is most of it
    assert not canary.exists()
    assert _registry_snapshot(client) == before


def test_the_stopped_at_validation_check_can_fail():
    assert _stopped_at_validation(["validate", "main.validate", "report", "released_images_to_rebuild"])
    for work in ("python.build_ci", "python.python_base", "promote_latest", "retag", "main.push_ci"):
        assert not _stopped_at_validation(["validate", work])
