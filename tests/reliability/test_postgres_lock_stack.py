"""The promotion lock held in a real PostgreSQL (locks.PostgresPromotionLock), as workers on several
machines share it: holders of one key take turns, other branches never wait, a waiter that gives up names
the holder, and a holder whose session dies (its process killed, or its backend terminated) frees the
lock at once.

A PostgreSQL of its own per module: the stack's image (include/stack/postgres-image.sh), on a free port,
removed at the end. Holders are real processes (fork), each on its own connection.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import subprocess
import time

import pytest

from airflow_image_factory.clients.locks import PostgresPromotionLock, advisory_key, promotion_lock
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import PromotionLockTimeout, PromotionLockUnavailable
from airflow_image_factory.tasks.hooks import find_connection

pytestmark = pytest.mark.stack

CTX = multiprocessing.get_context("fork")
REGISTRY, REPOSITORY = "localhost:5000", "apache/airflow"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cli = os.environ.get("IMAGE_FACTORY_DOCKER_CLI") or "docker"
    return subprocess.run([cli, *args], capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture(scope="module")
def database(stack_env) -> dict:
    """psycopg2 arguments of a fresh PostgreSQL; the container goes when the module ends."""
    import psycopg2

    image = os.environ.get("IMAGE_FACTORY_SMOKE_POSTGRES_IMAGE") or "localhost:5000/library/postgres:15-bookworm"
    password = secrets.token_urlsafe(16)
    name = f"image-factory-locktest-{secrets.token_hex(4)}"
    docker("run", "-d", "--name", name, "-p", "127.0.0.1::5432", "-e", "POSTGRES_USER=locker",
           "-e", "POSTGRES_DB=locks", "-e", f"POSTGRES_PASSWORD={password}", image)
    try:
        port = int(docker("port", name, "5432/tcp").stdout.split(":")[-1])
        connect = {"host": "127.0.0.1", "port": port, "user": "locker", "password": password, "dbname": "locks"}
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg2.connect(**connect, connect_timeout=2).close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL in {name} did not accept connections: "
                                f"{docker('logs', '--tail', '20', name, check=False).stderr}")
                time.sleep(0.5)
        yield connect
    finally:
        docker("rm", "-f", "-v", name, check=False)


def _lock(database: dict, branch: str, owner: str, **kwargs) -> PostgresPromotionLock:
    return PostgresPromotionLock(advisory_key(REGISTRY, REPOSITORY, branch), connect=database,
                                 where="the test database", owner=owner, **kwargs)


def _hold(database: dict, branch: str, ready, release, seconds: float) -> None:
    with _lock(database, branch, "run-A of main at 1234abcd").hold():
        ready.set()
        release.wait(seconds)


class Holder:
    """A process that holds the branch's lock until released (or ``seconds`` pass)."""

    def __init__(self, database: dict, branch: str = "main", seconds: float = 60):
        self.ready, self.release = CTX.Event(), CTX.Event()
        self.process = CTX.Process(target=_hold, args=(database, branch, self.ready, self.release, seconds),
                                   daemon=True)
        self.process.start()
        assert self.ready.wait(20), "the holder did not get the lock"

    def stop(self) -> None:
        # A holder killed while it waited on ``release`` counts as a sleeper of the event's condition
        # forever, so setting the event then would wait for it to wake: only a live holder is released.
        if self.process.is_alive():
            self.release.set()
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


@pytest.fixture
def holder(database):
    made: list[Holder] = []

    def start(**kwargs) -> Holder:
        made.append(Holder(database, **kwargs))
        return made[-1]

    yield start
    for h in made:
        h.stop()


def test_two_holders_of_one_branch_take_turns(database, holder):
    first = holder(seconds=2)
    told: list[str] = []
    with _lock(database, "main", "run-B", poll=0.1, on_wait=told.append).hold() as lock:
        assert 1.5 < lock.waited < 10, lock.waited
    assert len(told) == 1 and "held by run-A of main at 1234abcd (backend pid" in told[0], told
    first.process.join(10)
    assert first.process.exitcode == 0  # it released and left cleanly


def test_another_branch_does_not_wait(database, holder):
    holder(branch="main")
    with _lock(database, "v3-1-test", "run-B", timeout=1, poll=0.1).hold() as lock:
        assert lock.waited < 0.5


def test_a_waiter_gives_up_after_its_timeout_and_names_the_holder(database, holder):
    holder()
    started = time.monotonic()
    with pytest.raises(PromotionLockTimeout) as error, _lock(database, "main", "run-B", timeout=1, poll=0.1).hold():
        pytest.fail("the lock was taken while another run held it")
    assert 1 <= time.monotonic() - started < 5
    message = str(error.value)
    assert "is still held by run-A of main at 1234abcd (backend pid " in message
    assert "after 1s; latest was not changed by this run" in message
    assert database["password"] not in message


def test_a_killed_holder_frees_the_lock_at_once(database, holder):
    held = holder()
    os.kill(held.process.pid, signal.SIGKILL)  # this test's own child, by its pid
    held.process.join(10)
    with _lock(database, "main", "run-B", timeout=5, poll=0.05).hold() as lock:
        assert lock.waited < 2, lock.waited


def test_a_holder_whose_session_is_terminated_frees_the_lock_and_knows_it_lost_it(database):
    import psycopg2

    admin = psycopg2.connect(**database)
    admin.autocommit = True
    lost = _lock(database, "main", "run-A")
    with pytest.raises(PromotionLockUnavailable, match="was lost while promoting"), lost.hold():
        with admin.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'run-A'")
            (backend,) = cursor.fetchone()
            cursor.execute("SELECT pg_terminate_backend(%s)", (backend,))
        # the server let go of the lock when the session ended, while its holder still runs
        with _lock(database, "main", "run-B", timeout=5, poll=0.05).hold() as other:
            assert other.waited < 2
    admin.close()


def test_the_task_lock_reaches_a_postgres_connection(database, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_IMAGE_FACTORY_PROMOTION_LOCK",
                       "postgresql://{user}:{password}@{host}:{port}/{dbname}".format(**database))
    settings = load_settings(env={"IMAGE_FACTORY_PROMOTION_LOCK_TIMEOUT": "1"})  # auto, the default Connection
    lock = promotion_lock(settings, registry=REGISTRY, repository=REPOSITORY, branch="main", owner="run-C",
                           find_connection=find_connection)
    with lock.hold():
        with pytest.raises(PromotionLockTimeout, match=r"held by run-C \(backend pid"), \
                _lock(database, "main", "run-D", timeout=0.5, poll=0.1).hold():
            pytest.fail("taken twice")
