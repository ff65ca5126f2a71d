"""Verify a built image as users run it: each check through the image's own entrypoint, then (PROD) the
api-server answering its health endpoint and serving the compiled UI. No Airflow: the operator hands in
the engine and where to log.

The api-server's health is polled with the smoke runs' :func:`poll_health` (one health loop in the
package); alone in a container it has a migrated metadatabase and nothing else, so only that component
is required to be healthy.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

from airflow_image_factory.exceptions import SmokeRunFailed, VerificationFailed
from airflow_image_factory.policy.image_contract import ImageCheck
from airflow_image_factory.services.chart import API_SERVER_PORT, HEALTH_PATH
from airflow_image_factory.services.docker_smoke import poll_health

API_SERVER_HEALTH_TIMEOUT = 240.0
API_SERVER_HEALTH_INTERVAL = 3.0
# The entrypoint migrates (_AIRFLOW_DB_MIGRATE) after its database check, as in the chart.
API_SERVER_ENVIRONMENT = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////tmp/airflow.db",
                          "_AIRFLOW_DB_MIGRATE": "true"}
_UI_SCRIPT = re.compile(r'<script[^>]+src="\./(static/assets/[^"]+\.js)"')


def run_checks(
    engine: Any, image: str, checks: Sequence[ImageCheck], *, on_line: Callable[[str], None],
    say: Callable[[str], None], timeout: float = 1800,
) -> list[dict[str, Any]]:
    """Run every check in ``image``; the first that finds a problem raises :class:`VerificationFailed`
    naming the check, what it found and the end of its output."""
    results = []
    for check in checks:
        command = " ".join(check.command) if check.command else "(the image's CMD)"
        say(f"check {check.name}{f' (user {check.user})' if check.user else ''}: {command}")
        result = engine.run(image, command=check.command, user=check.user, environment=check.environment,
                            on_line=on_line, timeout=timeout)
        problems = check.failures(result.exit_code, result.output)
        results.append({"check": check.name, "passed": not problems, "exit_code": result.exit_code})
        if problems:
            raise VerificationFailed(
                f"{image}: check {check.name!r} failed: {'; '.join(problems)}; last output:\n"
                + "\n".join(result.output.splitlines()[-20:])
            )
    return results


def check_api_server(
    engine: Any, image: str, *, say: Callable[[str], None], get: Callable[..., Any] = requests.get,
    sleep: Callable[[float], None] = time.sleep, timeout: float = API_SERVER_HEALTH_TIMEOUT,
    interval: float = API_SERVER_HEALTH_INTERVAL,
) -> float:
    """Start ``api-server`` in ``image``; seconds until its health answered with a healthy metadatabase
    and it served the UI. A container that exits first fails at once, with its last log lines."""
    container = engine.start(image, ["api-server", "--port", str(API_SERVER_PORT)],
                             environment=dict(API_SERVER_ENVIRONMENT))
    started = time.monotonic()
    try:
        container.reload()
        base_url = f"http://{container.attrs['NetworkSettings']['IPAddress']}:{API_SERVER_PORT}"

        def still_running() -> None:
            container.reload()
            if container.status == "exited":
                logs = container.logs(tail=30).decode(errors="replace")
                raise VerificationFailed(f"{image}: api-server exited before answering:\n{logs}")

        try:
            poll_health(lambda: get(f"{base_url}{HEALTH_PATH}", timeout=5),
                        tries=max(1, math.ceil(timeout / interval)), interval=interval,
                        what=f"the api-server of {image}", say=say, sleep=sleep, before_try=still_running,
                        components=("metadatabase",))
        except SmokeRunFailed as exc:
            raise VerificationFailed(f"{image}: api-server health within {timeout:.0f}s: {exc}") from exc
        check_ui(image, base_url, get=get, say=say)
        return time.monotonic() - started
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


def check_ui(image: str, base_url: str, *, get: Callable[..., Any] = requests.get,
             say: Callable[[str], None]) -> None:
    """The compiled UI is served: its index.html, and the script it loads."""
    page = get(f"{base_url}/", timeout=10)
    script = _UI_SCRIPT.search(page.text)
    if not page.ok or not script:
        raise VerificationFailed(
            f"{image}: the api-server does not serve the compiled UI at / (HTTP {page.status_code}): "
            f"{page.text[:300]!r}"
        )
    asset = get(f"{base_url}/{script.group(1)}", timeout=10)
    if not asset.ok or not asset.content:
        raise VerificationFailed(f"{image}: the UI's {script.group(1)} is not served (HTTP {asset.status_code})")
    say(f"UI served: / loads {script.group(1)} ({len(asset.content)} bytes)")
