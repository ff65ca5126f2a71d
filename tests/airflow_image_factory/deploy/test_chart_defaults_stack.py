"""The chart's defaults (the official chart's: FAB auth manager, create-user and migration hook Jobs, airflow.cfg
as one file, log groomers, fsGroup) on the Docker engine, with the published PROD images as they are:
the regular image must come up healthy, with the admin user able to log in; the slim one (no providers) must
fail, saying it lacks fab. And the kubelet behaviour those rest on, with small pods of the stack's postgres
image: restarts with back-off, probe thresholds, hook order, subPath files, users and groups.

Nothing is built here (see conftest.py); every container, volume and network is labelled with its run and
removed, which each test checks.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from airflow_image_factory.exceptions import SmokeRunFailed
from airflow_image_factory.services.chart import Rendered, api_server_service, check_chart, deploy_values
from airflow_image_factory.services.docker_smoke import RUN_LABEL, BackOff, DockerSmokeRun, HealthCheck

pytestmark = [pytest.mark.stack, pytest.mark.slow]

RUN_BOUND = 900  # seconds; a regular run takes about a minute here, the slim failure about two


def chart_run(settings, engine, image: str, lines: list[str], **kwargs) -> DockerSmokeRun:
    """The chart with its defaults: only the image and the database image are set, as a user would."""
    checked = check_chart(deploy_values(image=image, postgres_image=settings.smoke_postgres_image),
                          release="airflow", namespace="airflow", versions=settings.smoke_kubernetes_versions)
    return DockerSmokeRun(engine.client, checked.rendered, namespace="airflow", timeout=RUN_BOUND,
                          health=HealthCheck(api_server_service("airflow"), 8080, tries=12, interval=5),
                          on_line=lines.append, **kwargs)


def leftovers(engine, run_id: str) -> list[str]:
    label = {"label": f"{RUN_LABEL}={run_id}"}
    return ([c.name for c in engine.client.containers.list(all=True, filters=label)]
            + [n.name for n in engine.client.networks.list(filters=label)]
            + [v.name for v in engine.client.volumes.list(filters=label)])


def at(text: str, event: str) -> float:
    """When the run noted ``event`` (seconds from its start)."""
    match = re.search(r"\[\s*([\d.]+)s\] " + re.escape(event), text)
    assert match, f"{event!r} is not in the run's notes:\n{text}"
    return float(match.group(1))


def test_regular_prod_image_comes_up_healthy_with_the_chart_defaults(settings, engine, regular_prod_image):
    seen: dict[str, object] = {}

    def look_inside(run: DockerSmokeRun) -> None:
        api = f"http://{run.address_of(api_server_service('airflow'))}:8080"
        login = requests.post(f"{api}/auth/token", json={"username": "admin", "password": "admin"}, timeout=60)
        seen["login"] = login.status_code
        if login.ok:
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
            seen["dags"] = requests.get(f"{api}/api/v2/dags", headers=bearer, timeout=60).status_code
        seen["bad_login"] = requests.post(f"{api}/auth/token", json={"username": "admin", "password": "nope"},
                                          timeout=60).status_code
        seen["scheduler"] = run.exec_in("airflow-scheduler-smoke", "scheduler", [
            "bash", "-c", "stat -c '%F' /opt/airflow/airflow.cfg; stat -c '%a %g' /opt/airflow/logs; id -G; "
                          "airflow config get-value core auth_manager"])
        seen["groomer"] = run.exec_in("airflow-scheduler-smoke", "scheduler-log-groomer", [
            "bash", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done"])

    lines: list[str] = []
    run = chart_run(settings, engine, regular_prod_image, lines, on_ready=look_inside)
    started = time.monotonic()
    result = run.run()
    seconds = time.monotonic() - started
    text = "\n".join(lines)
    print(f"regular PROD image {regular_prod_image}: healthy with the chart defaults in {seconds:.0f}s")
    # the hooks in weight order, and the user created once the migrations were there
    assert at(text, "Job/airflow-migrate-database: completed") <= at(text, "Job/airflow-create-user: try 1/")
    assert "Job/airflow-create-user: completed" in text
    for component in ("scheduler", "dag-processor", "triggerer"):
        assert f"airflow-{component}-smoke/{component}-log-groomer: started" in text
        assert f"airflow-{component}-smoke/{component}: liveness probe passed" in text
    # every container became ready and live through its own probes
    for ident in ("api-server-smoke/api-server: readiness probe passed", "api-server-smoke/api-server: liveness",
                  "scheduler-smoke/scheduler: startup probe passed", "postgresql-0/postgresql: readiness"):
        assert ident in text, f"{ident!r} missing from:\n{text}"
    assert "health of airflow-api-server: all healthy" in text
    assert len(result["pods"]) == 7
    # the admin of createUserJob.defaultUser logs in through the FAB auth manager, a wrong password does not
    assert seen["login"] in (200, 201) and seen["dags"] == 200 and seen["bad_login"] == 401, seen
    code, output = seen["scheduler"]
    assert code == 0, output
    kind, logs_mode, groups, auth_manager = output.strip().splitlines()[-4:]
    assert kind == "regular file"  # the subPath mount: airflow.cfg itself, not a directory named so
    assert logs_mode == "2777 0"  # the emptyDir: 0777, the fsGroup's, setgid
    assert "0" in groups.split()
    assert auth_manager == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    assert any(line.strip().endswith("bash /clean-logs") for line in seen["groomer"][1].splitlines()), seen["groomer"]
    assert leftovers(engine, run.run_id) == []


def test_slim_prod_image_fails_the_chart_defaults_naming_the_fab_provider(settings, engine, slim_prod_image):
    lines: list[str] = []
    run = chart_run(settings, engine, slim_prod_image, lines)
    started = time.monotonic()
    with pytest.raises(SmokeRunFailed) as caught:
        run.run()
    seconds = time.monotonic() - started
    message = str(caught.value)
    print(f"slim PROD image {slim_prod_image}: failed in {seconds:.0f}s: {message.splitlines()[0]}")
    assert ("the image lacks airflow.providers.fab (the package apache-airflow-providers-fab), which [core] "
            "auth_manager names") in message, message
    assert re.search(r"\((Init:)?CrashLoopBackOff\)|\(BackoffLimitExceeded\)", message), message
    assert seconds < RUN_BOUND
    assert leftovers(engine, run.run_id) == []


# ---- the kubelet behaviour the chart relies on, with small pods -------------------------------------------


def _pod_spec(image: str, script: str, **extra) -> dict:
    """One container running ``script`` as uid 999 with an emptyDir at /work (where it may write)."""
    return {"restartPolicy": "Always", "securityContext": {"runAsUser": 999, "runAsGroup": 999},
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script],
                            "volumeMounts": [{"name": "work", "mountPath": "/work"}], **extra}],
            "volumes": [{"name": "work", "emptyDir": {}}]}


def _deployment(name: str, spec: dict) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def _job(name: str, spec: dict, *, weight: int | None = None, backoff_limit: int = 0) -> dict:
    annotations = {} if weight is None else {"helm.sh/hook": "post-install", "helm.sh/hook-weight": str(weight)}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "annotations": annotations},
            "spec": {"backoffLimit": backoff_limit, "template": {"spec": {**spec, "restartPolicy": "OnFailure"}}}}


def small_run(engine, objects, lines, **kwargs) -> DockerSmokeRun:
    return DockerSmokeRun(engine.client, Rendered(tuple(objects)), namespace="smoke", on_line=lines.append,
                          **{"timeout": 180, "backoff": BackOff(initial=1, max_restarts=3), **kwargs})


def test_a_container_that_exits_is_restarted_with_back_off_and_keeps_its_empty_dir(settings, engine):
    # exits twice (counting in its emptyDir, which outlives a container as in a pod), then stays up
    script = ('n=$(cat /work/n 2>/dev/null || echo 0); echo $((n + 1)) > /work/n; '
              '[ "$n" -ge 2 ] && exec sleep 600; echo "exit $n"; exit 3')
    spec = _pod_spec(settings.smoke_postgres_image, script)
    lines: list[str] = []
    run = small_run(engine, [_deployment("flaky", spec)], lines)
    result = run.run()
    text = "\n".join(lines)
    assert result["restarts"] == {"flaky-smoke/main": 2}
    assert "flaky-smoke/main: exited with code 3; restart 1 in 1s (back-off)" in text
    assert "flaky-smoke/main: exited with code 3; restart 2 in 2s (back-off)" in text
    assert at(text, "flaky-smoke/main: started (") < at(text, "flaky-smoke/main: exited with code 3; restart 2")
    assert leftovers(engine, run.run_id) == []


def test_a_crash_loop_fails_after_the_bound_of_restarts(settings, engine):
    lines: list[str] = []
    run = small_run(engine, [_deployment("crash", _pod_spec(settings.smoke_postgres_image, "echo boom; exit 7"))],
                    lines, backoff=BackOff(initial=1, max_restarts=2))
    with pytest.raises(SmokeRunFailed, match=r"crash-smoke/main exited with code 7 \(CrashLoopBackOff\).*after 2 "
                                             r"restarts(.|\n)*boom"):
        run.run()
    text = "\n".join(lines)
    assert "restart 1 in 1s" in text and "restart 2 in 2s" in text
    assert leftovers(engine, run.run_id) == []


def test_liveness_failures_up_to_the_threshold_kill_the_container_and_startup_gates_it(settings, engine):
    # startup passes once /work/started exists (after ~3 s, within 10 tries 1 s apart); liveness only runs after
    # it, and fails: after 2 failures in a row the container is killed, restarted, and the run fails
    probe = {"periodSeconds": 1, "timeoutSeconds": 5}
    spec = _pod_spec(settings.smoke_postgres_image, "sleep 3; touch /work/started; exec sleep 600",
                     startupProbe={"exec": {"command": ["test", "-f", "/work/started"]}, "failureThreshold": 10,
                                   **probe},
                     livenessProbe={"exec": {"command": ["test", "-f", "/never-there"]}, "failureThreshold": 2,
                                    **probe})
    lines: list[str] = []
    run = small_run(engine, [_deployment("unwell", spec)], lines, backoff=BackOff(initial=1, max_restarts=1))
    with pytest.raises(SmokeRunFailed, match=r"unwell-smoke/main exited .*\(CrashLoopBackOff\): liveness exec test "
                                             r"-f /never-there failed 2 times in a row"):
        run.run()
    text = "\n".join(lines)
    startup_passed = at(text, "unwell-smoke/main: startup probe passed")
    assert startup_passed - at(text, "unwell-smoke/main: started (") >= 2.5  # it really waited for the file
    assert at(text, "unwell-smoke/main: liveness exec test -f /never-there failed 2 times") > startup_passed
    assert re.search(r"unwell-smoke/main: started \([\d.]+\), restart 1;", text)  # once, before the run gave up
    assert leftovers(engine, run.run_id) == []


def test_hook_jobs_run_by_weight_files_users_and_groups_as_a_kubelet_sets_them(settings, engine):
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
                  "data": {"app.cfg": "[core]\nkey = value\n", "other.txt": "other"}}
    checks = " && ".join([
        'test -f /etc/app/app.cfg', 'grep -qx "key = value" /etc/app/app.cfg', 'test ! -e /etc/app/other.txt',
        'test "$(cat /etc/picked/sub/other)" = other', 'test "$(id -u)" = 1234', 'test "$(id -g)" = 4321',
        'id -G | tr " " "\\n" | grep -qx 2000', 'id -G | tr " " "\\n" | grep -qx 3000',
        'test "$(stat -c %g /data)" = 2000', 'test -z "$(ls -A /data)"', 'touch /data/written',
        'test "$(stat -c %g /data/written)" = 2000',
    ])
    checking = {
        "securityContext": {"runAsUser": 1234, "runAsGroup": 4321, "fsGroup": 2000, "supplementalGroups": [3000]},
        "containers": [{"name": "check", "image": settings.smoke_postgres_image,
                        "command": ["sh", "-c", f"set -x; {checks}"],
                        "volumeMounts": [
                            {"name": "app", "mountPath": "/etc/app/app.cfg", "subPath": "app.cfg", "readOnly": True},
                            {"name": "picked", "mountPath": "/etc/picked"},
                            {"name": "data", "mountPath": "/data"}]}],  # where the image has nothing
        "volumes": [{"name": "app", "configMap": {"name": "app"}},
                    {"name": "picked", "configMap": {"name": "app",
                                                     "items": [{"key": "other.txt", "path": "sub/other"}]}},
                    {"name": "data", "emptyDir": {}}],
    }
    quick = {"containers": [{"name": "main", "image": settings.smoke_postgres_image, "command": ["true"]}]}
    objects = [config_map, _deployment("idle", _pod_spec(settings.smoke_postgres_image, "exec sleep 600")),
               _job("second", quick, weight=5), _job("checks", checking, weight=-1), _job("plain", quick)]
    lines: list[str] = []
    run = small_run(engine, objects, lines)
    run.run()
    text = "\n".join(lines)
    assert at(text, "Job/checks: completed") <= at(text, "Job/second: try 1/")
    assert at(text, "Job/plain: try 1/") <= at(text, "idle-smoke/main: started (")  # Jobs start first
    assert leftovers(engine, run.run_id) == []
