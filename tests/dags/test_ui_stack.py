"""The Airflow UI of the stack's real Airflow (the instance `make run` starts: PostgreSQL, scheduler,
api-server), in headless Debian Chromium driven by Selenium, used as a person uses it: signed in through
the simple auth manager's login form with the admin's password, the DAGs listed, build_images' trigger
form with every build-request field, a finished run with its per-Python mapped tasks labelled by
version, and a push task's "Image in registry" link pointing at the image that task pushed. Screenshots
are kept in test-artifacts/ (ui-*.png).

The finished run is the newest successful build_images run there with more than one Python version
(the scheduler tests leave one); when there is none, one is triggered for main's commit, which reuses
main's published images by content key.
Chromium and chromedriver come from Debian (include/stack/up.sh installs them), selenium from the test
extras.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from airflow_image_factory.policy.request import BUILD_SCHEMA
from airflow_image_factory.tasks.links import IMAGE_REF_XCOM_KEY, image_web_url
from tests.support.dag_runs import ARTIFACTS, airflow_server, stack_versions

pytestmark = [pytest.mark.stack]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DAG_ID = "build_images"
# every field a conf may set, by its title: the form is made from the same schema
FORM_FIELDS = tuple(f.title for f in BUILD_SCHEMA.fields if f.name not in BUILD_SCHEMA.fixed)
MAPPED_TASKS = ("python.build_ci", "python.build_prod", "python.verify_ci", "python.push_prod")


def _get(api, path: str, **params) -> dict:
    answer = api.get(f"{api.base}/api/v2{path}", params=params, timeout=30)
    answer.raise_for_status()
    return answer.json()


def _versions_of(api, run_id: str) -> list[str]:
    tis = _get(api, f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances", limit=1000)["task_instances"]
    return [ti["rendered_map_index"] for ti in sorted(tis, key=lambda ti: ti["map_index"])
            if ti["task_id"] == "python.push_prod" and ti["state"] == "success"]


def _finished_run(api) -> tuple[str, list[str]] | None:
    runs = _get(api, f"/dags/{DAG_ID}/dagRuns", state="success", order_by="-end_date", limit=20)["dag_runs"]
    for run in runs:
        versions = _versions_of(api, run["dag_run_id"])
        if len(versions) > 1:
            return run["dag_run_id"], versions
    return None


@pytest.fixture(scope="module")
def finished_run(real_api) -> tuple[str, list[str]]:
    found = _finished_run(real_api)
    if found is None:
        conf = {"branch": "main", "python_versions": stack_versions()}
        followed = airflow_server("trigger", DAG_ID, json.dumps(conf))
        assert followed.returncode == 0, followed.stdout[-4000:] + followed.stderr[-2000:]
        found = _finished_run(real_api)
    assert found is not None, "no successful build_images run with more than one Python version"
    return found


@pytest.fixture(scope="module")
def ui_url(real_api) -> str:
    return real_api.base


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1100",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _body_text(driver) -> str:
    """The page's visible text; "" while the page is being replaced (a redirect, the UI re-rendering:
    the body just found is gone before its text is read)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except (StaleElementReferenceException, NoSuchElementException):
        return ""


def _wait_for_text(driver, *texts: str, timeout: float = 30) -> str:
    """The page's visible text once it shows every one of ``texts`` (the UI renders asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        body = _body_text(driver)
        missing = [t for t in texts if t not in body]
        if not missing:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{driver.current_url} never showed {missing}; it shows:\n{body[:3000]}")
        time.sleep(0.5)


def _wait_for(driver, xpath: str, timeout: float = 30):
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        found = driver.find_elements(By.XPATH, xpath)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{driver.current_url} has no {xpath}; it shows:\n{_body_text(driver)[:3000]}")
        time.sleep(0.5)


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"ui-{name}.png"
    driver.save_screenshot(str(path))
    return path


@pytest.fixture(scope="module")
def signed_in(browser, ui_url, airflow_server_module):
    """The admin signs in on the login page, as a person does (the password from the stack's file)."""
    from selenium.common.exceptions import StaleElementReferenceException

    browser.get(f"{ui_url}/dags")
    _wait_for_text(browser, "Sign into Airflow")
    for attempt in range(3):  # the login page may render its form twice (a busy machine shows it)
        try:
            username = _wait_for(browser, "//form//input[not(@type='password')]")[0]
            password = _wait_for(browser, "//form//input[@type='password']")[0]
            username.clear()
            username.send_keys(airflow_server_module.USER)
            password.clear()
            password.send_keys(airflow_server_module.admin_password())
            _screenshot(browser, "login")
            _wait_for(browser, "//button[normalize-space()='Sign in']")[0].click()
            break
        except StaleElementReferenceException:
            if attempt == 2:
                raise
            time.sleep(1)
    _wait_for_text(browser, DAG_ID)
    return browser


def test_a_wrong_password_is_refused(ui_url):
    answer = requests.post(f"{ui_url}/auth/token", json={"username": "admin", "password": "not-it"}, timeout=30)
    assert answer.status_code == 401, answer.text[:300]


def test_dags_are_listed(signed_in, ui_url):
    signed_in.get(f"{ui_url}/dags")
    dag_ids = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "dags").glob("*.py")
                     if not p.name.startswith("_"))
    _wait_for_text(signed_in, *dag_ids)
    assert _screenshot(signed_in, "dags").stat().st_size > 10_000


def test_trigger_form_shows_every_build_request_field(signed_in, ui_url):
    signed_in.get(f"{ui_url}/dags/{DAG_ID}")
    _wait_for_text(signed_in, DAG_ID, "Trigger")
    _wait_for(signed_in, "//button[normalize-space()='Trigger']")[0].click()
    body = _wait_for_text(signed_in, f"Trigger Dag - {DAG_ID}", "Run Parameters", *FORM_FIELDS)
    assert "Branch of the sources to build." in body  # the Param's description, as help text
    _screenshot(signed_in, "trigger-form")


def test_a_finished_run_shows_its_user_and_its_tasks_per_python_version(signed_in, ui_url, real_api, finished_run):
    run_id, versions = finished_run
    run = _get(real_api, f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")
    signed_in.get(f"{ui_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
    body = _wait_for_text(signed_in, run_id, "Success", "python.build_ci", "python.verify_prod", "promote_latest")
    assert run["triggering_user_name"] == "admin" and "admin" in body
    # each mapped task is listed once per Python version, its label (the rendered map index) beside it
    lines = body.splitlines()
    for task in MAPPED_TASKS:
        shown = {lines[i + 1] for i, line in enumerate(lines[:-1]) if line == task}
        assert shown == set(versions), (task, shown)
    _screenshot(signed_in, "finished-run")


def test_the_image_in_registry_link_points_at_the_pushed_image(signed_in, ui_url, real_api, finished_run):
    run_id, versions = finished_run
    run_path = f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"
    for map_index, version in enumerate(versions):
        pushed = _get(real_api, f"{run_path}/taskInstances/python.push_prod/xcomEntries/{IMAGE_REF_XCOM_KEY}",
                      map_index=map_index, deserialize="true")["value"]
        assert f"/prod/python{version}:" in pushed, pushed
        expected = image_web_url(pushed)
        # the task instance's Details tab lists its extra links
        signed_in.get(f"{ui_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/python.push_prod/mapped/{map_index}"
                      "/details")
        [link] = _wait_for(signed_in, "//a[normalize-space()='Image in registry']")
        assert link.get_attribute("href") == expected, (version, pushed)
        if map_index == 0:
            _screenshot(signed_in, "image-link")
        # the page is real: the registry lists the tag the task pushed
        tags = requests.get(expected, timeout=30).json()["tags"]
        assert re.split(r"[:@]", pushed.rsplit("/", 1)[-1])[1] in tags, (expected, tags)
