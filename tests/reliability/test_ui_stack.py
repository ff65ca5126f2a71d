"""The Airflow UI in a real browser: Airflow's api-server on loopback, headless Debian Chromium driven
by Selenium, looked at as a user would - the DAGs are listed, build_images' trigger form shows the
build-request fields, a finished run shows its per-Python-version tasks. Screenshots are kept in
test-artifacts/ (ui-*.png).

Uses the stack's Airflow home (its finished build_images run, left by the stack tests or `make
run`); when there is none yet, one is made with ``push`` false for one Python version.
Chromium and chromedriver come from Debian (include/stack/up.sh installs them), selenium from the
test extras.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.support.dag_runs import ARTIFACTS, airflow_db, run_dag
from tests.support.registry_servers import free_port

pytestmark = [pytest.mark.stack]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FORM_FIELDS = (
    "Branch", "Python versions", "Registry", "Repository", "Source repository", "Commit SHA", "Cache", "Push",
    "Upgrade to newer dependencies", "Rebuild", "Airflow version", "Test command", "Naming convention",
)


def _finished_run() -> tuple[str, list[str]] | None:
    """(run_id, python versions) of the newest successful build_images run with mapped tasks."""
    with sqlite3.connect(f"file:{airflow_db()}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'build_images' AND state = 'success' "
            "AND run_id IN (SELECT run_id FROM task_instance WHERE dag_id = 'build_images' "
            "AND task_id = 'python.build_ci') ORDER BY end_date DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        versions = [v for (v,) in db.execute(
            "SELECT rendered_map_index FROM task_instance WHERE dag_id = 'build_images' AND run_id = ? "
            "AND task_id = 'python.build_ci' ORDER BY map_index", (row[0],)
        )]
    return row[0], versions


@pytest.fixture(scope="module")
def finished_run(stack_env) -> tuple[str, list[str]]:
    found = _finished_run()
    if found is None:
        run = run_dag("build_images", {"python_versions": ["3.11"], "push": False, "repository": "reliability/ui"},
                      name="reliability-ui-run")
        assert run.returncode == 0, run.output[-4000:]
        found = _finished_run()
    assert found is not None
    return found


@pytest.fixture(scope="module")
def api_server(stack_env, tmp_path_factory):
    port = free_port()
    log = (tmp_path_factory.mktemp("api-server") / "api-server.log").open("w")
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    airflow = str(Path(sys.executable).parent / "airflow")
    proc = subprocess.Popen([airflow, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"api-server exited with {proc.returncode}; see {log.name}"
            try:
                if requests.get(f"{url}/api/v2/monitor/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"api-server did not answer in 180 s; see {log.name}"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, 15)  # its own session: the server and the workers it started
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait_for_text(driver, *texts: str, timeout: float = 30) -> str:
    """The page's visible text once it shows every one of ``texts`` (the UI renders asynchronously)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        body = driver.find_element(By.TAG_NAME, "body").text
        missing = [t for t in texts if t not in body]
        if not missing:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{driver.current_url} never showed {missing}; it shows:\n{body[:3000]}")
        time.sleep(0.5)


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"ui-{name}.png"
    driver.save_screenshot(str(path))
    return path


def test_dags_are_listed(api_server, browser):
    browser.get(f"{api_server}/dags")
    dag_ids = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "dags").glob("*.py")
                     if not p.name.startswith("_"))
    _wait_for_text(browser, *dag_ids)
    assert _screenshot(browser, "dags").stat().st_size > 10_000


def test_trigger_form_shows_the_build_request_fields(api_server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{api_server}/dags/build_images")
    _wait_for_text(browser, "build_images", "Trigger")
    browser.find_element(By.XPATH, "//button[normalize-space()='Trigger']").click()
    body = _wait_for_text(browser, "Trigger Dag - build_images", "Run Parameters", *FORM_FIELDS)
    assert "Branch of the sources to build." in body  # the Param's description, as help text
    _screenshot(browser, "trigger-form")


def test_finished_run_shows_its_python_version_tasks(api_server, browser, finished_run):
    run_id, versions = finished_run
    assert versions and all(v.startswith("3.") for v in versions)
    browser.get(f"{api_server}/dags/build_images/runs/{quote(run_id, safe='')}")
    body = _wait_for_text(browser, run_id, "Success", "python.build_ci", "python.verify_prod", "promote_latest")
    # each per-version task is listed under its Python version (the map index label)
    lines = body.splitlines()
    for task in ("python.build_ci", "python.build_prod", "python.verify_ci", "python.push_prod"):
        shown = {lines[i + 1] for i, line in enumerate(lines[:-1]) if line == task}
        assert shown == set(versions), (task, shown)
    _screenshot(browser, "finished-run")
