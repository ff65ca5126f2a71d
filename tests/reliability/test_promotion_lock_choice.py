"""Which promotion lock a task holds (file or PostgreSQL) and the PostgreSQL lock's key; no database here
(tests/reliability/test_postgres_lock_stack.py holds the lock in a real PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_image_factory.clients.locks import (
    PostgresPromotionLock,
    PromotionLock,
    advisory_key,
    choose_lock_mode,
    promotion_lock,
)
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import SettingsError
from airflow_image_factory.tasks.hooks import find_connection

CONN_ENV = "AIRFLOW_CONN_IMAGE_FACTORY_PROMOTION_LOCK"  # the default promotion_lock_database


def test_the_key_is_the_same_in_every_process():
    # A literal: Python's hash() is salted per process, a key built on it would differ between workers.
    assert advisory_key("localhost:5000", "apache/airflow", "main") == -6423741944809228737
    other = subprocess.run(
        [sys.executable, "-c", "from airflow_image_factory.clients.locks import advisory_key as k;"
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
    ("setting", "exists", "mode"),
    [("auto", True, "postgres"), ("auto", False, "file"), ("postgres", True, "postgres"), ("file", True, "file")],
)
def test_the_lock_mode(setting, exists, mode):
    assert choose_lock_mode(setting, connection_id="lock_db", connection_exists=exists) == mode


def test_postgres_asked_for_without_its_connection_is_an_error_not_a_file_lock():
    with pytest.raises(SettingsError, match="promotion_lock is postgres, but there is no Connection lock_db"):
        choose_lock_mode("postgres", connection_id="lock_db", connection_exists=False)
    with pytest.raises(SettingsError, match="promotion_lock must be one of auto, postgres, file, got 'flock'"):
        choose_lock_mode("flock", connection_id="lock_db", connection_exists=True)


def test_the_settings_default_to_auto_with_a_connection_id_and_the_environment_forces_a_mode():
    settings = load_settings(env={})
    assert (settings.promotion_lock, settings.promotion_lock_database) == ("auto", "image_factory_promotion_lock")
    assert load_settings(env={"IMAGE_FACTORY_PROMOTION_LOCK": "file"}).promotion_lock == "file"


def _lock(env: dict[str, str]):
    return promotion_lock(load_settings(env=env), registry="localhost:5000", repository="apache/airflow",
                          branch="main", owner="run-A of main at abc", find_connection=find_connection)


def test_the_connection_gives_the_lock_its_database_and_its_password_stays_out_of_messages(monkeypatch):
    monkeypatch.setenv(CONN_ENV, "postgresql://locker:pw-of-locker@pg.example:6543/locks"
                                 "?sslmode=require&application_name=ignored")
    lock = _lock({})
    assert isinstance(lock, PostgresPromotionLock)
    assert lock.key == advisory_key("localhost:5000", "apache/airflow", "main")
    assert lock.connect == {"host": "pg.example", "port": 6543, "user": "locker", "password": "pw-of-locker",
                            "dbname": "locks", "sslmode": "require"}
    assert "pg.example:6543/locks (Connection image_factory_promotion_lock)" in lock.name
    assert "pw-of-locker" not in lock.name


def test_without_the_connection_or_forced_it_is_the_flock(monkeypatch, tmp_path):
    monkeypatch.delenv(CONN_ENV, raising=False)
    assert isinstance(_lock({"IMAGE_FACTORY_PROMOTION_LOCK_DIR": str(tmp_path)}), PromotionLock)
    monkeypatch.setenv(CONN_ENV, "postgresql://locker:pw@pg.example/locks")
    forced = _lock({"IMAGE_FACTORY_PROMOTION_LOCK": "file", "IMAGE_FACTORY_PROMOTION_LOCK_DIR": str(tmp_path)})
    assert isinstance(forced, PromotionLock) and forced.name.startswith(str(tmp_path))


def test_postgres_forced_without_the_connection_fails_the_promotion(monkeypatch):
    monkeypatch.delenv(CONN_ENV, raising=False)
    with pytest.raises(SettingsError, match="no Connection image_factory_promotion_lock"):
        _lock({"IMAGE_FACTORY_PROMOTION_LOCK": "postgres"})


def test_a_connection_that_is_not_postgres_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_LOCK_DB", "mysql://u:p@db/x")
    with pytest.raises(SettingsError, match="Connection other_lock_db is of type 'mysql', not postgres"):
        _lock({"IMAGE_FACTORY_PROMOTION_LOCK_DATABASE": "other_lock_db"})
