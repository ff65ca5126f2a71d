"""Task groups and small tasks shared by the DAGs, so DAG files only wire steps.

Nothing here touches the network or the metadata database at import or parse time.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import get_current_context, task, task_group

from airflow_image_factory.clients.git import LS_REMOTE_TIMEOUT, branch_head, commit_on_branch, shown_url
from airflow_image_factory.exceptions import BranchNotFound, CommitNotOnBranch, TestsFailWithoutUpgrades
from airflow_image_factory.policy.naming import VARIANTS
from airflow_image_factory.policy.request import (
    NIGHTLY_SCHEMA,
    BuildRequest,
    conf_object,
    validate_nightly_request,
    validate_request,
    validate_smoke_request,
)
from airflow_image_factory.policy.settings import Settings
from airflow_image_factory.tasks.assets import UPGRADE_BLOCKED, UPGRADE_BLOCKED_ALIAS
from airflow_image_factory.tasks.evidence import AttestImageOperator, verify_published
from airflow_image_factory.tasks.nightly_operators import (
    CheckForUpdatesOperator,
    CommitConstraintsOperator,
    GenerateConstraintsOperator,
    ProbeUpgradesOperator,
)
from airflow_image_factory.tasks.operators import (
    BuildImageOperator,
    PreparePythonBaseOperator,
    PromoteImagesOperator,
    PushImageOperator,
    TidyEngineOperator,
    VerifyImageOperator,
    fail_if_unreachable,
    fails_at_once,
    mapped_values,
    run_settings,
    step_timeout,
)

log = logging.getLogger(__name__)
# The execution_timeout of the small tasks here (settings: timeout_short_minutes); read once, when the
# DAG files import this module, from the file and the environment. The operators size their own.
SHORT = step_timeout("timeout_short_minutes")


def dag_default_args(settings: Settings) -> dict[str, Any]:
    """The ``default_args`` of every DAG: its owner, one retry 30 s later, and a bounded run for any
    task that does not size its own (``timeout_short_minutes``; the operators here each name theirs)."""
    return {
        "owner": "airflow-images",
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": step_timeout("timeout_short_minutes", settings),
    }


# The nightly run decides these itself: each configured branch, its head, newest dependencies.
NIGHTLY_FIXED_FIELDS = tuple(NIGHTLY_SCHEMA.fixed)


# A bad request does not get better on a retry: fail at once, so a rejected conf fails within seconds.
@task(multiple_outputs=False, retries=0, execution_timeout=SHORT)
@fails_at_once
def validate(extra_fields: tuple[str, ...] = (), branch: str | None = None, smoke: bool = False) -> dict[str, Any]:
    """The run's conf over the settings (file < environment < Variable) → one validated request.

    ``branch`` fixes the branch (the nightly run's per-branch groups); the conf may not name another.
    ``smoke``: a smoke deploy's request (no ``variants``: it deploys the regular image).
    """
    context = get_current_context()
    if branch is not None:  # the nightly's rules, the same the run's validate_conf gate applied
        [request] = validate_nightly_request(context["dag_run"].conf, run_settings(), branches=[branch])
    elif smoke:
        request = validate_smoke_request(context["dag_run"].conf, run_settings())
    else:
        request = validate_request(conf_object(context["dag_run"].conf), run_settings(), allowed_extra=extra_fields)
    log.info("Build request: %s", request.to_dict())
    return request.to_dict()


def resolve_branch_sha(source_repo: str, branch: str, *, timeout: float = LS_REMOTE_TIMEOUT) -> str:
    """The commit ``branch`` points at in ``source_repo``, read with ``git ls-remote`` (no clone).

    A missing branch, or a repository that cannot be read, is permanent (fails the task at once)."""
    sha = branch_head(source_repo, branch, timeout=timeout)
    if sha is None:
        raise BranchNotFound(f"branch: {branch!r} does not exist in {shown_url(source_repo)}")
    return sha


@task(execution_timeout=SHORT)
@fails_at_once
def resolve_sha(build_request: dict[str, Any]) -> dict[str, Any]:
    """Fix the commit the whole run builds: the given ``commit_sha``, or the branch head now.

    A given commit must be on the branch: the images are named after the branch, and must never hold
    another branch's code.
    """
    request = BuildRequest.from_dict(build_request)
    settings = run_settings()
    if request.commit_sha:
        full = commit_on_branch(request.source_repo, request.commit_sha, request.branch, timeout=settings.git_timeout,
                                ls_remote_timeout=settings.git_ls_remote_timeout)
        if full is None:
            # No retry mends this (permanent): the task fails at once, naming the field.
            raise CommitNotOnBranch(
                f"commit_sha: {request.commit_sha} is not a commit of branch {request.branch!r} of "
                f"{request.source_repo} (images named after a branch hold only that branch's code)"
            )
        log.info("Building the given commit %s (on %s)", full, request.branch)
        return request.with_sha(full).to_dict()  # images are tagged with the full SHA
    sha = resolve_branch_sha(request.source_repo, request.branch, timeout=settings.git_ls_remote_timeout)
    log.info("Branch %s of %s is at %s", request.branch, request.source_repo, sha)
    return request.with_sha(sha).to_dict()


@task(execution_timeout=SHORT)
@fails_at_once
def branch_constraints(build_request: dict[str, Any]) -> dict[str, str]:
    """``constraints-X.Y.txt`` of each Python version from ``constraints-BRANCH`` of the source repository
    (or, for a branch that has none yet, from the default branch's constraints branch), read once so every
    build of the run installs the same pins. Found nowhere: one warning, and that version installs without
    constraints (Airflow's own fallback)."""
    from airflow_image_factory.clients.git import BranchFiles
    from airflow_image_factory.policy.constraints import constraints_branches, constraints_file_name

    request = BuildRequest.from_dict(build_request)
    if request.upgrade_to_newer_dependencies:
        log.info("upgrade_to_newer_dependencies: the constraints are not used")
        return {}
    found: dict[str, str] = {}
    settings = run_settings()
    branches = constraints_branches(request.branch, settings.branch)
    for branch in branches:
        missing = [python for python in request.python_versions if python not in found]
        if not missing:
            break
        with BranchFiles(request.source_repo, branch, timeout=settings.git_timeout,
                         ls_remote_timeout=settings.git_ls_remote_timeout) as files:
            for python in missing:
                text = files.read(constraints_file_name(python))
                if text is not None:
                    found[python] = text
                    log.info("Python %s installs with %s of %s (%s)", python, constraints_file_name(python), branch,
                             files.head)
    for python in request.python_versions:
        if python not in found:
            log.warning("No %s on %s of %s: Python %s installs without constraints", constraints_file_name(python),
                        " or ".join(branches), request.source_repo, python)
    return found


@task(execution_timeout=SHORT)
@fails_at_once
def check_publishing(build_request: dict[str, Any]) -> dict[str, Any]:
    """Fork mode: a fork's sources, or no write access to the registry → build and test, publish nothing.

    Said once, here, as a warning; every later step reads ``push`` from the request it returns.
    """
    from airflow_image_factory.policy.naming import images_for
    from airflow_image_factory.policy.promotion import fork_mode_reason
    from airflow_image_factory.tasks.evidence import evidence_required, signing_keys
    from airflow_image_factory.tasks.hooks import RegistryHook

    request = BuildRequest.from_dict(build_request)
    if not request.push:
        log.info("push is off for this run: everything is built and tested, nothing is published")
        return request.to_dict()
    settings = run_settings()
    fail_if_unreachable(request.registry)  # the run's first registry call: a registry that is down fails here
    probe = images_for(request, request.python_versions[0]).ci
    with RegistryHook(request.registry, settings=settings).get_conn() as client:
        can_write = client.can_push(probe.path)
    reason = fork_mode_reason(
        source_repo=request.source_repo, canonical_source=settings.canonical_source, can_write=can_write,
        registry=request.registry,
    )
    if reason is None:
        log.info("Publishing to %s: write access confirmed, %s is the canonical source", request.registry,
                 request.source_repo)
        if evidence_required(settings, request.push):
            # Before any build: a run that could not sign its images could not publish them either.
            signer, _ = signing_keys(settings)
            log.info("Evidence is signed with key %s (Connection %s)", signer.keyid[:12], settings.signing_connection)
        return request.to_dict()
    log.warning("FORK MODE: %s. Everything is built and tested; nothing is pushed and no constraints are "
                "committed.", reason)
    return BuildRequest.from_dict({**request.to_dict(), "push": False}).to_dict()


@task(execution_timeout=SHORT)
@fails_at_once
def python_versions(build_request: dict[str, Any]) -> list[str]:
    """The list the per-version groups are mapped over (Airflow maps over a task's whole return value)."""
    return list(build_request["python_versions"])


# Waits for every variant's push; a variant the run does not build is skipped, which is no failure.
@task(execution_timeout=SHORT, trigger_rule="none_failed")
@fails_at_once
def version_outcome(python: str, ci_digest: str | None, builds: dict[str, Any]) -> dict[str, Any]:
    """Reached only when every build, check and push of this version succeeded (or was skipped as a
    variant the run does not build). ``builds`` maps each variant's PROD kind to its push's digest and
    its build stage kind to the stage's build summary: a stage that was reused (content key) is
    promoted from its registry digest, as it is not on this worker to push."""
    digests = {"ci": ci_digest} if ci_digest else {}
    platform_digests = {}
    for kind, value in builds.items():
        if isinstance(value, dict):
            if value.get("reused") and value.get("digest"):
                digests[kind] = value["digest"]
            elif reused := {p["platform"]: p["digest"] for p in value.get("platforms") or [] if p.get("reused")}:
                platform_digests[kind] = reused  # several platforms, some reused: tagged, the others pushed
        elif value:
            digests[kind] = value
    return {"python": python, "passed": True, "digests": digests, "failures": [], "platform_digests": platform_digests}


def python_version_images(
    build_request: Any, pool: str, *, constraints: Any = None, generate_constraints: bool = False
):
    """A task group, mapped over Python versions: base → CI and PROD builds → checks → :SHA pushes →
    signed evidence of each pushed image (``attest_ci``, ``attest_prod``, ``attest_prod_slim``).

    Every PROD variant has its chain (``build_prod_build``, ``build_prod``, ``verify_prod``, ``push_prod``;
    the slim variant's ids end in ``_slim``); a run's ``variants`` decide which run, the others skip.
    ``constraints`` (Python version → file text) makes the builds install with those constraints;
    ``generate_constraints`` adds the step writing ``constraints-X.Y.txt`` from the tested CI image.
    """

    @task_group(group_id="python")
    def per_version(python: str):
        common = {"build_request": build_request, "python": python, "map_index_template": "{{ task.python }}"}
        build = {"python_base": None, "constraints": constraints, "pool": pool, **common}
        base = PreparePythonBaseOperator(task_id="python_base", **common)
        build["python_base"] = base.output
        ci = BuildImageOperator(task_id="build_ci", kind="ci", **build)
        verify_ci = VerifyImageOperator(task_id="verify_ci", kind="ci", build=ci.output, **common)
        ci >> verify_ci
        verifies, pushes, attests, builds = [verify_ci], [], [], {}
        evidence = {"python_base": base.output, "constraints": constraints, **common}
        for variant in VARIANTS.values():
            suffix = variant.task_suffix
            stage = BuildImageOperator(task_id=f"build_prod_build{suffix}", kind=variant.prod_build.value, **build)
            prod = BuildImageOperator(task_id=f"build_prod{suffix}", kind=variant.prod.value, **build)
            verify = VerifyImageOperator(task_id=f"verify_prod{suffix}", kind=variant.prod.value, build=prod.output,
                                         **common)
            # none_failed: a push waits for every check of the version; a skipped variant does not block it.
            push = PushImageOperator(task_id=f"push_prod{suffix}", kind=variant.prod.value, build=prod.output,
                                     trigger_rule="none_failed", **common)
            stage >> prod >> verify >> push
            verifies.append(verify)
            pushes.append(push)
            attests.append(AttestImageOperator(
                task_id=f"attest_prod{suffix}", kind=variant.prod.value, build=prod.output,
                verification=verify.output, pushed=push.output, **evidence))
            builds[variant.prod.value] = push.output
            builds[variant.prod_build.value] = stage.output
        push_ci = PushImageOperator(task_id="push_ci", kind="ci", build=ci.output, trigger_rule="none_failed",
                                    **common)
        attests.append(AttestImageOperator(task_id="attest_ci", kind="ci", build=ci.output,
                                           verification=verify_ci.output, pushed=push_ci.output, **evidence))
        # Every push waits for every check: a version either passes whole or pushes nothing.
        for push in [push_ci, *pushes]:
            verifies >> push
        outcome = version_outcome(python, push_ci.output, builds)
        # No outcome (so no latest) for a version until every pushed image's evidence is signed and stored.
        attests >> outcome
        result = {"base": base.output, "outcome": outcome}
        if generate_constraints:
            generated = GenerateConstraintsOperator(task_id="constraints", constraints=constraints, **common)
            verify_ci >> generated >> outcome  # no constraints, no latest
            result["constraints"] = generated.output
        return result

    return per_version


def build_and_publish(settings: Settings, build_request: Any) -> PromoteImagesOperator:
    """Mapped per-version groups (installing with the branch's constraints), then the all-or-nothing
    promotion and the run's table of images."""
    promote = publish_versions(settings, build_request, python_versions(build_request),
                               constraints=branch_constraints(build_request))
    fail_run_if_a_task_failed()
    return promote


def publish_versions(
    settings: Settings, build_request: Any, versions: Any, *, constraints: Any = None, commit_constraints: bool = False
) -> PromoteImagesOperator:
    """Build, verify and push each of ``versions``, promote them all or none, report; optionally commit
    the constraints generated from the tested CI images (after the promotion succeeded)."""
    before = task_ids_so_far(build_request)
    per_version = python_version_images(
        build_request, settings.build_pool, constraints=constraints, generate_constraints=commit_constraints
    )
    groups = per_version.expand(python=versions)
    promote = PromoteImagesOperator(
        task_id="promote_latest",
        build_request=build_request,
        outcomes=groups["outcome"],
        python_bases=groups["base"],
    )
    report(build_request, groups["outcome"], promote.output)
    verify_published(build_request, promote.output)
    if commit_constraints:
        commit = CommitConstraintsOperator(
            task_id="commit_constraints", build_request=build_request, generated=groups["constraints"]
        )
        promote >> commit
    # A teardown: it runs however the tasks before it ended, and Airflow leaves it out of the run's state.
    tidy = TidyEngineOperator(task_id="tidy_engine", build_request=build_request).as_teardown()
    run_last(tidy, after_all_since=before)
    return promote


def dag_of(node: Any) -> Any:
    """The DAG ``node`` - an operator, or the output (``XComArg``) of a task - was created in.

    Public API only (``operator.dag``, ``XComArg.operator``/``iter_references``): the helpers here take the
    DAG from a task made inside it rather than from Airflow's internal "DAG being defined" context."""
    operator = getattr(node, "operator", None)
    if operator is None and hasattr(node, "iter_references"):
        operator = next((ref for ref, _ in node.iter_references()), None)
    return (node if operator is None else operator).dag


def task_ids_so_far(node: Any) -> set[str]:
    """The ids of the tasks the DAG of ``node`` (a task, or a task's output) has now (for :func:`run_last`)."""
    return set(dag_of(node).task_dict)


def run_last(last: Any, *, after_all_since: set[str]) -> Any:
    """Make ``last`` wait for every task added to its DAG since ``after_all_since`` (a set of task ids),
    however they ended: with only the promotion upstream, a failed version would let it start while
    another version still builds or pushes."""
    dag = dag_of(last)
    for task_id in set(dag.task_dict) - after_all_since - {last.task_id}:
        dag.task_dict[task_id] >> last
    return last


@task.short_circuit(execution_timeout=SHORT)
@fails_at_once
def anything_to_rebuild(plan: dict[str, Any]) -> bool:
    """False skips the rest of the branch's run: nothing is built, pushed or committed."""
    return bool(plan["rebuild"])


@task(execution_timeout=SHORT)
@fails_at_once
def rebuild_request(build_request: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The request narrowed to the versions that changed; they install the resolved newest set."""
    return {**build_request, "python_versions": list(plan["rebuild"]), "upgrade_to_newer_dependencies": False}


@task(execution_timeout=SHORT)
@fails_at_once
def versions_of(plan: dict[str, Any]) -> list[str]:
    return list(plan["rebuild"])


@task(execution_timeout=SHORT)
@fails_at_once
def upgraded_constraints(plan: dict[str, Any], verdict: dict[str, Any] | None = None) -> dict[str, str]:
    """The constraints each rebuilt version installs: the newest set, or where the bisection named
    culprits, the newest set with them held back (``bisection_verdict``)."""
    return {**plan["constraints"], **((verdict or {}).get("constraints") or {})}


def nightly_branch(settings: Settings, build_request: Any) -> None:
    """One branch of the nightly run: check → (only what changed) probe the upgrades, build, verify,
    publish, commit constraints."""
    plan = CheckForUpdatesOperator(task_id="check_for_updates", build_request=build_request).output
    gate = anything_to_rebuild(plan)
    request = rebuild_request(build_request, plan)
    gate >> request
    verdict = bisect_upgrades(settings, request, plan)
    publish_versions(
        settings, request, versions_of(plan), constraints=upgraded_constraints(plan, verdict),
        commit_constraints=True,
    )


def bisect_upgrades(settings: Settings, build_request: Any, plan: Any) -> Any:
    """Pre-flight probes of a branch's upgraded dependencies, before the full builds: ``bisection_rounds``
    rounds, each a ``bisection_round_N`` task (the probes every version's search asks for next, from
    every result so far) and a ``probe_upgrades_N`` task mapped over them (in the build pool, so two
    build at once), then ``bisection_verdict``. Round 0 confirms (every upgrade; none); when every
    upgrade passes, nothing is bisected. A round with nothing left to probe skips, and so do the rest."""
    probed: list[Any] = []
    for number in range(settings.bisection_rounds):
        probes = bisection_round.override(task_id=f"bisection_round_{number}")(build_request, plan, probed=list(probed))
        probe = ProbeUpgradesOperator.partial(
            task_id=f"probe_upgrades_{number}", build_request=build_request, plan=plan, round_number=number,
            pool=settings.build_pool, map_index_template="{{ task.python }}: {{ task.upgraded | length }} upgraded",
        ).expand_kwargs(probes)
        probed.append(probe.output)
    return bisection_verdict(build_request, plan, probed=probed)


@task(execution_timeout=SHORT)
@fails_at_once
def bisection_round(build_request: dict[str, Any], plan: dict[str, Any], probed: list) -> list[dict[str, Any]]:
    """The probes of this round (``{python, upgraded}`` each, the kwargs of the round's mapped probe
    task) from every earlier round's results; ``build_request`` (the rebuild's) only orders it after the
    gate. None left (every search has its verdict): skipped, and with it this round's probes and every
    later round (their trigger rule is all_success)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airflow_image_factory.policy.bisection import next_round

    searches = {python: search["upgrades"] for python, search in (plan.get("bisection") or {}).items()}
    probes = next_round(searches, _probe_results(probed))
    if not probes:
        raise AirflowSkipException("every search has its verdict: nothing to probe")
    for probe in probes:
        log.info("Python %s: probe %d of %d upgrades", probe["python"], len(probe["upgraded"]),
                 len(searches[probe["python"]]))
    return probes


def _probe_results(probed: list | None) -> list[dict[str, Any]]:
    """Every probe result of the rounds so far (a skipped round gave none)."""
    return [result for results in probed or [] for result in mapped_values(results) if result]


# all_done: the rebuild waits for this, whether the rounds ended in a verdict, ran out or a probe
# could not run (then nothing is held and the failed probe fails the run).
@task(execution_timeout=SHORT, trigger_rule="all_done", outlets=[UPGRADE_BLOCKED_ALIAS])
@fails_at_once
def bisection_verdict(build_request: dict[str, Any] | None, plan: dict[str, Any] | None, probed: list) -> dict:
    """Each version's verdict. Culprits: its rebuild installs the newest set with them held back at
    their current versions, and hold comment lines name each (package, the version that failed, this run)
    for the committed constraints. Tests that fail with no upgrade at all: nothing of the branch is built or
    published (:class:`TestsFailWithoutUpgrades`, after the summary and the note). Otherwise nothing is held
    and the rebuild proceeds as it would have.

    Logs the summary (culprits, the failing probe's test output, the probes' table), returns it, and on
    culprits emits an ``image_factory_upgrade_blocked`` event with it as the extra.
    """
    from airflow_image_factory.policy.bisection import bisection_summary, culprit_holds, verdict_of, with_holds
    from airflow_image_factory.policy.constraints import parse_pins

    context = get_current_context()
    searches = (plan or {}).get("bisection") or {}
    results = _probe_results(probed)
    verdicts = {python: verdict_of(search["upgrades"], results, python) for python, search in searches.items()}
    holds, constraints = {}, {}
    for python, verdict in verdicts.items():
        if verdict.kind == "culprits":
            current = parse_pins(searches[python]["current"])
            holds[python] = culprit_holds(verdict, current, searches[python]["resolved"], context["run_id"])
            constraints[python] = with_holds(plan["constraints"][python], current, holds[python])
    summary = bisection_summary(branch=(build_request or {}).get("branch", ""), run_id=context["run_id"],
                                verdicts=verdicts, holds=holds, probed=results)
    if verdicts:
        log.info("%s", summary["text"])
    if holds:
        context["outlet_events"][UPGRADE_BLOCKED_ALIAS].add(UPGRADE_BLOCKED, extra=summary)
    if any(verdict.kind != "upgrades_pass" for verdict in verdicts.values()):
        _say_in_run_note(context, summary["text"])
    broken = sorted(python for python, verdict in verdicts.items() if verdict.kind == "fails_without_upgrades")
    if broken:
        # Promotion is all or nothing: one version that cannot pass means nothing is published, so
        # building the others would only spend the pool.
        raise TestsFailWithoutUpgrades(
            f"Python {', '.join(broken)}: the tests fail with the branch's current constraints, no upgrade "
            f"installed (the probe's output is above): no upgrade is to blame, nothing is held, and nothing of "
            f"{(build_request or {}).get('branch', 'the branch')} is built or published"
        )
    return {"constraints": constraints, "summary": summary}


def _say_in_run_note(context: Any, text: str) -> None:
    """``text`` as the DAG run's note, through the REST API (``run_note_connection``): Airflow 3's Task SDK
    has no way for a task to write it (apache/airflow#64890). A note that cannot be written is said in
    the log; the run goes on."""
    from airflow_image_factory.clients.airflow_api import set_run_note
    from airflow_image_factory.exceptions import RunNoteNotSet
    from airflow_image_factory.tasks.hooks import find_connection

    connection_id = run_settings().run_note_connection
    conn = find_connection(connection_id) if connection_id else None
    if conn is None or not conn.host:
        log.info("The run's note is not written: no Connection %s to the Airflow API (run_note_connection)",
                 connection_id or "(none named)")
        return
    # host as a URL (http://api:8080), or host, port and the scheme in "schema" (Airflow's http Connections)
    base = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}" + (
        f":{conn.port}" if conn.port else "")
    try:
        set_run_note(base, username=conn.login or "", password=conn.password or "", dag_id=context["dag"].dag_id,
                     run_id=context["run_id"], note=text)
    except RunNoteNotSet as exc:
        log.warning("The run's note is not written: %s", exc)
        return
    log.info("The run's note says the bisection's summary (%s)", base)


def fail_run_if_a_task_failed():
    """Airflow judges a run by its leaf tasks, and ``report`` runs (and succeeds) whatever happened.

    This watcher, downstream of every task, fails when any of them failed, so a failed build or check
    makes the whole run fail (Airflow's own system tests use the same pattern).
    """
    watcher = _watcher()
    run_last(watcher.operator, after_all_since=set())
    return watcher


@task(task_id="fail_run_if_a_task_failed", trigger_rule="one_failed", execution_timeout=SHORT)
@fails_at_once
def _watcher() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException("a task of this run failed (see the failed task's log); no latest was changed")


@task(trigger_rule="all_done", execution_timeout=SHORT)
@fails_at_once
def report(build_request: dict[str, Any], outcomes: list | None, published: list | None) -> list[dict[str, str]]:
    """One table of every image and digest of the run, in the log and as the run's last XCom."""
    from airflow_image_factory.policy.naming import images_for

    if not build_request:  # a step before the builds failed (validation, the commit, the registry check)
        log.info("Images of this run: none (the run stopped before building; see the failed task)")
        return []
    request = BuildRequest.from_dict(build_request)
    rows: list[dict[str, str]] = []
    for outcome in mapped_values(outcomes):
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
    from airflow_image_factory.policy.naming import ImageKind

    return ImageKind(value)


@task(execution_timeout=SHORT)
@fails_at_once
def released_images_to_rebuild() -> list[dict[str, Any]]:
    """Released ``X.Y.Z-pythonA.B`` images whose Python base has a new digest upstream (AIP-26).

    Reads tags, manifests and config labels only. Returns one ``release_images`` conf per release to
    rebuild (newest patch of each X.Y line), which republishes the same tags after its checks.
    """
    from airflow_image_factory.services.release import releases_to_rebuild
    from airflow_image_factory.tasks.hooks import RegistryHook

    conf = conf_object(get_current_context()["dag_run"].conf)
    settings = run_settings()
    request = validate_request({k: v for k, v in conf.items() if k not in NIGHTLY_FIXED_FIELDS}, settings)
    fail_if_unreachable(request.registry)
    return releases_to_rebuild(
        request, lambda registry: RegistryHook(registry, settings=settings).get_conn(), log=log.info
    )


def rebuild_released_images():
    """Each release to rebuild is a ``release_images`` run: the same build, checks and forward-only tag rules."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    return TriggerDagRunOperator.partial(
        task_id="rebuild_released_images", trigger_dag_id="release_images", wait_for_completion=False,
        execution_timeout=SHORT,
    ).expand(conf=released_images_to_rebuild())
