"""Which promotion lock a task holds (file or PostgreSQL) and the PostgreSQL lock's key; no database here
(tests/reliability/test_postgres_lock_stack.py holds the lock in a real PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_image_factory.exceptions import SettingsError
from airflow_image_factory.locks import (
    PostgresPromotionLock,
    advisory_key,
    choose_lock_mode,
    libpq_url,
    promotion_lock,
)
from airflow_image_factory.promotion import PromotionLock
from airflow_image_factory.settings import load_settings

PG_METADATA = "postgresql+psycopg2://airflow:s3cret-pw@db.example:5432/airflow"
SQLITE_METADATA = "sqlite:////opt/airflow/airflow.db"


def test_the_key_is_the_same_in_every_process():
    # A literal: Python's hash() is salted per process, a key built on it would differ between workers.
    assert advisory_key("localhost:5000", "apache/airflow", "main") == -6423741944809228737
    other = subprocess.run(
        [sys.executable, "-c", "from airflow_image_factory.locks import advisory_key as k;"
                               "print(k('localhost:5000', 'apache/airflow', 'main'))"],
        capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin",
                                                         "PYTHONPATH": ":".join(sys.path)},
    )
    assert int(other.stdout.split()[-1]) == -6423741944809228737


def test_one_key_per_registry_repository_branch_within_bigint():
    keys = {
        advisory_key("localhost:5000", "apache/airflow", "main"),
        advisory_key("localhost:5000", "apache/airflow", "v3-1-test"),
        advisory_key("ghcr.io", "apache/airflow", "main"),
        advisory_key("localhost:5000", "fork/airflow", "main"),
        # the same text joined with "/": repository a/b with branch c is not repository a with branch b/c
        advisory_key("r", "a/b", "c"),
        advisory_key("r", "a", "b/c"),
    }
    assert len(keys) == 6
    assert all(-(2**63) <= key < 2**63 for key in keys)


@pytest.mark.parametrize(
    ("setting", "connection_id", "metadata_url", "mode"),
    [
        ("auto", "", PG_METADATA, "postgres"),
        ("auto", "", "postgres://airflow@db/airflow", "postgres"),
        ("auto", "", SQLITE_METADATA, "file"),
        ("auto", "", "", "file"),
        ("auto", "promotion_lock_db", SQLITE_METADATA, "postgres"),  # a named Connection wins
        ("postgres", "", PG_METADATA, "postgres"),
        ("postgres", "promotion_lock_db", "", "postgres"),
        ("file", "promotion_lock_db", PG_METADATA, "file"),  # forced: one machine
    ],
)
def test_the_lock_mode(setting, connection_id, metadata_url, mode):
    assert choose_lock_mode(setting, connection_id=connection_id, metadata_url=metadata_url) == mode


def test_postgres_asked_for_without_a_postgres_database_is_an_error_not_a_file_lock():
    with pytest.raises(SettingsError, match="promotion_lock is postgres, but"):
        choose_lock_mode("postgres", metadata_url=SQLITE_METADATA)
    with pytest.raises(SettingsError, match="promotion_lock must be one of auto, postgres, file, got 'flock'"):
        choose_lock_mode("flock", metadata_url=PG_METADATA)


def test_the_settings_default_to_auto_and_the_environment_forces_a_mode():
    assert load_settings(env={}).promotion_lock == "auto"
    assert load_settings(env={}).promotion_lock_database == ""
    assert load_settings(env={"IMAGE_FACTORY_PROMOTION_LOCK": "file"}).promotion_lock == "file"


def _lock(monkeypatch, env: dict[str, str], metadata_url: str):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", metadata_url)
    return promotion_lock(load_settings(env=env), registry="localhost:5000", repository="apache/airflow",
                          branch="main", owner="run-A of main at abc")


def test_a_postgresql_metadata_database_holds_the_lock_and_its_password_stays_out_of_messages(monkeypatch):
    lock = _lock(monkeypatch, {}, PG_METADATA)
    assert isinstance(lock, PostgresPromotionLock)
    assert lock.key == advisory_key("localhost:5000", "apache/airflow", "main")
    assert lock.connect == {"dsn": "postgresql://airflow:s3cret-pw@db.example:5432/airflow"}
    assert "s3cret" not in lock.name and "metadata database" in lock.name


def test_sqlite_metadata_or_a_forced_file_lock_is_the_flock(monkeypatch, tmp_path):
    assert isinstance(_lock(monkeypatch, {"IMAGE_FACTORY_PROMOTION_LOCK_DIR": str(tmp_path)}, SQLITE_METADATA),
                      PromotionLock)
    forced = _lock(monkeypatch, {"IMAGE_FACTORY_PROMOTION_LOCK": "file",
                                 "IMAGE_FACTORY_PROMOTION_LOCK_DIR": str(tmp_path)}, PG_METADATA)
    assert isinstance(forced, PromotionLock) and forced.name.startswith(str(tmp_path))


def test_a_named_connection_gives_the_lock_its_database(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PROMOTION_LOCK_DB", "postgresql://locker:pw-of-locker@pg.example:6543/locks"
                                                         "?sslmode=require&application_name=ignored")
    lock = _lock(monkeypatch, {"IMAGE_FACTORY_PROMOTION_LOCK_DATABASE": "promotion_lock_db"}, SQLITE_METADATA)
    assert isinstance(lock, PostgresPromotionLock)
    assert lock.connect == {"host": "pg.example", "port": 6543, "user": "locker", "password": "pw-of-locker",
                            "dbname": "locks", "sslmode": "require"}
    assert "pg.example:6543/locks (Connection promotion_lock_db)" in lock.name
    assert "pw-of-locker" not in lock.name


def test_a_connection_that_is_not_postgres_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PROMOTION_LOCK_DB", "mysql://u:p@db/x")
    with pytest.raises(SettingsError, match="Connection promotion_lock_db is of type 'mysql', not postgres"):
        _lock(monkeypatch, {"IMAGE_FACTORY_PROMOTION_LOCK_DATABASE": "promotion_lock_db"}, PG_METADATA)


def test_libpq_reads_what_sqlalchemy_names():
    assert libpq_url("postgresql+psycopg2://u:p@h:1/d?sslmode=require") == "postgresql://u:p@h:1/d?sslmode=require"
    assert libpq_url("postgres://u@h/d") == "postgresql://u@h/d"
