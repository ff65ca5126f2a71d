"""Task groups and small tasks shared by the DAGs, so DAG files only wire steps.

Nothing here touches the network or the metadata database at import or parse time.
"""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any

from airflow.sdk import Param, get_current_context, task, task_group

from airflow_image_factory.exceptions import SourceRepositoryError
from airflow_image_factory.naming import CONVENTIONS
from airflow_image_factory.operators import (
    BuildImageOperator,
    PreparePythonBaseOperator,
    PromoteImagesOperator,
    PushImageOperator,
    VerifyImageOperator,
    run_settings,
)
from airflow_image_factory.request import CACHE_MODES, BuildRequest, validate_request
from airflow_image_factory.settings import Settings

log = logging.getLogger(__name__)


def build_params(settings: Settings) -> dict[str, Param]:
    """The trigger form of a build: one field per build-request param, defaults from the settings."""
    d = settings.request_defaults()
    return {
        "branch": Param(d["branch"], type="string", title="Branch", description="Branch of the sources to build."),
        "python_versions": Param(
            d["python_versions"], type="array", title="Python versions",
            description="Python versions (X.Y) to build, one image set each.",
            items={"type": "string", "enum": list(settings.supported_python_versions)},
        ),
        "registry": Param(d["registry"], type="string", title="Registry", description="Registry host[:port]."),
        "repository": Param(
            d["repository"], type="string", title="Repository",
            description="Image repository prefix (the source repository, lower-cased).",
        ),
        "source_repo": Param(
            d["source_repo"], type="string", title="Source repository", description="Git URL or path of the sources."
        ),
        "commit_sha": Param(
            d["commit_sha"], type=["null", "string"], title="Commit SHA",
            description="Build this commit instead of the branch head (optional).",
        ),
        "cache": Param(d["cache"], type="string", enum=list(CACHE_MODES), title="Cache",
                       description="pulled: registry images as cache; local: engine cache only; disabled: none."),
        "push": Param(d["push"], type="boolean", title="Push", description="Push :SHA and, when tests pass, latest."),
        "upgrade_to_newer_dependencies": Param(
            d["upgrade_to_newer_dependencies"], type="boolean", title="Upgrade to newer dependencies",
            description="Resolve dependencies eagerly instead of using the constraints.",
        ),
        "airflow_version": Param(d["airflow_version"], type="string", title="Airflow version"),
        "test_command": Param(
            d["test_command"], type=["null", "string"], title="Test command",
            description="Run inside the CI image as the tests; empty: the image verification suite.",
        ),
        "naming": Param(d["naming"], type="string", enum=list(CONVENTIONS), title="Naming convention"),
    }


@task(multiple_outputs=False)
def validate(extra_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """The run's conf over the settings (file < environment < Variable) → one validated request."""
    context = get_current_context()
    conf = dict(context["dag_run"].conf or {})
    request = validate_request(conf, run_settings(), allowed_extra=extra_fields)
    log.info("Build request: %s", request.to_dict())
    return request.to_dict()


def resolve_branch_sha(source_repo: str, branch: str) -> str:
    """The commit ``branch`` points at in ``source_repo``, read with ``git ls-remote`` (no clone)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        result = subprocess.run(
            ["git", "ls-remote", "--heads", source_repo, f"refs/heads/{branch}"],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceRepositoryError(f"git ls-remote {source_repo} failed: {exc}") from exc
    if result.returncode != 0:
        raise SourceRepositoryError(f"cannot read {source_repo}: {result.stderr.strip()}")
    for line in result.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    raise SourceRepositoryError(f"branch {branch!r} does not exist in {source_repo}")


@task
def resolve_sha(build_request: dict[str, Any]) -> dict[str, Any]:
    """Fix the commit the whole run builds: the given ``commit_sha``, or the branch head now."""
    request = BuildRequest.from_dict(build_request)
    if request.commit_sha:
        log.info("Building the given commit %s", request.commit_sha)
        return request.to_dict()
    sha = resolve_branch_sha(request.source_repo, request.branch)
    log.info("Branch %s of %s is at %s", request.branch, request.source_repo, sha)
    return request.with_sha(sha).to_dict()


@task
def python_versions(build_request: dict[str, Any]) -> list[str]:
    """The list the per-version groups are mapped over (Airflow maps over a task's whole return value)."""
    return list(build_request["python_versions"])


@task
def version_outcome(python: str, ci_digest: str | None, prod_digest: str | None) -> dict[str, Any]:
    """Reached only when every build, check and push of this version succeeded."""
    digests = {k: v for k, v in (("ci", ci_digest), ("prod", prod_digest)) if v}
    return {"python": python, "passed": True, "digests": digests, "failures": []}


def python_version_images(build_request: Any, pool: str):
    """A task group, mapped over Python versions: base → CI and PROD builds → checks → :SHA pushes."""

    @task_group(group_id="python")
    def per_version(python: str):
        common = {"build_request": build_request, "python": python, "map_index_template": "{{ task.python }}"}
        base = PreparePythonBaseOperator(task_id="python_base", **common)
        ci = BuildImageOperator(task_id="build_ci", kind="ci", python_base=base.output, pool=pool, **common)
        prod_build = BuildImageOperator(
            task_id="build_prod_build", kind="prod-build", python_base=base.output, pool=pool, **common
        )
        prod = BuildImageOperator(task_id="build_prod", kind="prod", python_base=base.output, pool=pool, **common)
        verify_ci = VerifyImageOperator(task_id="verify_ci", kind="ci", **common)
        verify_prod = VerifyImageOperator(task_id="verify_prod", kind="prod", **common)
        push_ci = PushImageOperator(task_id="push_ci", kind="ci", **common)
        push_prod = PushImageOperator(task_id="push_prod", kind="prod", **common)
        prod_build >> prod
        ci >> verify_ci >> push_ci
        prod >> verify_prod >> push_prod
        # Both pushes wait for both checks: a version either passes whole or pushes nothing.
        [verify_ci, verify_prod] >> push_ci
        [verify_ci, verify_prod] >> push_prod
        outcome = version_outcome(python, push_ci.output, push_prod.output)
        return {"base": base.output, "outcome": outcome}

    return per_version


def build_and_publish(settings: Settings, build_request: Any) -> PromoteImagesOperator:
    """Mapped per-version groups, then the all-or-nothing promotion and the run's table of images."""
    per_version = python_version_images(build_request, settings.build_pool)
    groups = per_version.expand(python=python_versions(build_request))
    promote = PromoteImagesOperator(
        task_id="promote_latest",
        build_request=build_request,
        outcomes=groups["outcome"],
        python_bases=groups["base"],
    )
    report(build_request, groups["outcome"], promote.output)
    fail_run_if_a_task_failed()
    return promote


def fail_run_if_a_task_failed():
    """Airflow judges a run by its leaf tasks, and ``report`` runs (and succeeds) whatever happened.

    This watcher, downstream of every task, fails when any of them failed, so a failed build or check
    makes the whole run fail (Airflow's own system tests use the same pattern).
    """
    from airflow.sdk.definitions._internal.contextmanager import DagContext

    dag = DagContext.get_current()
    watcher = _watcher()
    for other in dag.tasks:
        if other is not watcher.operator:
            other >> watcher
    return watcher


@task(task_id="fail_run_if_a_task_failed", trigger_rule="one_failed")
def _watcher() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException("a task of this run failed (see the failed task's log); no latest was changed")


@task(trigger_rule="all_done")
def report(build_request: dict[str, Any], outcomes: list | None, published: list | None) -> list[dict[str, str]]:
    """One table of every image and digest of the run, in the log and as the run's last XCom."""
    from airflow_image_factory.naming import images_for

    request = BuildRequest.from_dict(build_request)
    rows: list[dict[str, str]] = []
    for outcome in outcomes or []:
        if not outcome:
            continue
        images = images_for(request, outcome["python"])
        for kind, digest in outcome["digests"].items():
            rows.append({"image": images[_kind(kind)].ref(request.commit_sha), "digest": digest})
    rows.extend({"image": p["image"], "digest": p["digest"]} for p in (published or []))
    width = max((len(r["image"]) for r in rows), default=5)
    lines = [f"{'IMAGE'.ljust(width)}  DIGEST"] + [f"{r['image'].ljust(width)}  {r['digest']}" for r in rows]
    log.info("Images of this run (%s):\n%s", "published" if published else "nothing published", "\n".join(lines))
    return rows


def _kind(value: str):
    from airflow_image_factory.naming import ImageKind

    return ImageKind(value)
