"""The test streams of `make test` (tests/support/streams.py): every module sits in the stream of the
session builds it uses, and a stream's Airflow home is a consistent copy of its own."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from tests.support.streams import REPO_ROOT, STREAMS, own_airflow_home, stream_of

MAIN_FIXTURES = re.compile(r"\b(main_build|real_airflow|real_api)\b")
OFFICIAL_FIXTURES = re.compile(r"\bofficial_build\b")


def test_every_module_is_in_the_stream_of_the_session_builds_it_uses():
    """A module in the other stream would run the build a second time, at once with the first."""
    checked = 0
    for path in sorted((REPO_ROOT / "tests").rglob("*.py")):
        module = path.name.startswith("test_") or path.name == "conftest.py"
        if not module or path == REPO_ROOT / "tests/conftest.py" or path.name == Path(__file__).name:
            continue
        text = path.read_text()
        uses_main, uses_official = MAIN_FIXTURES.search(text), OFFICIAL_FIXTURES.search(text)
        assert not (uses_main and uses_official), f"{path} uses both streams' builds"
        if uses_main:
            assert stream_of(path) == STREAMS[0], path
            checked += 1
        if uses_official:
            assert stream_of(path) == STREAMS[1], path
            checked += 1
    assert checked >= 8  # the build, scheduler, UI and deploy modules were found


def test_streams_split_the_suite_and_plain_paths_go_to_the_first():
    assert stream_of(REPO_ROOT / "tests/dags/test_official_image_stack.py") == "official"
    assert stream_of(REPO_ROOT / "tests/reliability/test_malformed_confs.py") == "official"
    assert stream_of(REPO_ROOT / "tests/reliability/test_faults_stack.py") == "main"
    assert stream_of(REPO_ROOT / "tests/dags/test_build_images_stack.py") == "main"
    assert stream_of(REPO_ROOT / "tests/airflow_image_factory/test_naming.py") == "main"
    assert stream_of(REPO_ROOT / "tests/dags/test_platforms_stack.py") == "platforms"


def test_a_streams_airflow_home_is_a_copy_pointing_at_itself(tmp_path):
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "airflow.cfg").write_text(f"[database]\nsql_alchemy_conn = sqlite:///{home}/airflow.db\n"
                                      f"[logging]\nbase_log_folder = {home}/logs\n")
    with sqlite3.connect(home / "airflow.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE dag_run (run_id TEXT)")
        db.execute("INSERT INTO dag_run VALUES ('manual__1')")
    stale = tmp_path / "airflow-official"
    stale.mkdir()
    (stale / "left-over").write_text("from the last session")

    copy = own_airflow_home(home, "official")

    assert copy == stale and not (copy / "left-over").exists()
    assert (copy / "airflow.cfg").read_text() == (f"[database]\nsql_alchemy_conn = sqlite:///{copy}/airflow.db\n"
                                                  f"[logging]\nbase_log_folder = {copy}/logs\n")
    with sqlite3.connect(copy / "airflow.db") as db:
        assert db.execute("SELECT run_id FROM dag_run").fetchall() == [("manual__1",)]
        db.execute("INSERT INTO dag_run VALUES ('manual__2')")  # its own: the source does not see it
    with sqlite3.connect(home / "airflow.db") as db:
        assert db.execute("SELECT count(*) FROM dag_run").fetchone() == (1,)
