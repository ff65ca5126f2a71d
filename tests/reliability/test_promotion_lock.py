"""The promotion lock: one promotion per (registry, repository, branch) at a time, across processes;
other branches never wait; a holder that dies releases it; a waiter gives up after its timeout.

Real processes (multiprocessing) and a real flock(2) on a temp directory; no mocks.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from airflow_image_factory.clients.locks import PromotionLock, lock_path
from airflow_image_factory.exceptions import PromotionLockTimeout, PromotionRefused

CTX = multiprocessing.get_context("fork")


def _hold(path: str, seconds: float, ready) -> None:
    with PromotionLock(path, owner="run-A").hold():
        ready.set()
        time.sleep(seconds)


def _holder(path: str, seconds: float):
    ready = CTX.Event()
    proc = CTX.Process(target=_hold, args=(path, seconds, ready), daemon=True)
    proc.start()
    assert ready.wait(10), "the holder did not get the lock"
    return proc


def test_one_lock_per_registry_repository_branch(tmp_path):
    d = str(tmp_path)
    a = lock_path(d, "localhost:5000", "apache/airflow", "main")
    assert a == lock_path(d, "localhost:5000", "apache/airflow", "main")
    others = {
        lock_path(d, "ghcr.io", "apache/airflow", "main"),
        lock_path(d, "localhost:5000", "fork/airflow", "main"),
        lock_path(d, "localhost:5000", "apache/airflow", "v3-1-test"),
    }
    assert a not in others and len(others) == 3
    assert os.path.dirname(a) == d and "/" not in os.path.basename(a)


def test_same_branch_waits_for_the_holder(tmp_path):
    path = lock_path(str(tmp_path), "r", "o/a", "main")
    holder = _holder(path, 1.5)
    messages: list[str] = []
    started = time.monotonic()
    with PromotionLock(path, owner="run-B", poll=0.05, on_wait=messages.append).hold() as lock:
        waited = time.monotonic() - started
    holder.join(5)
    assert waited >= 1.0 and lock.waited >= 1.0
    assert len(messages) == 1 and "run-A" in messages[0]  # says who it waits for


def test_other_branches_do_not_wait(tmp_path):
    holder = _holder(lock_path(str(tmp_path), "r", "o/a", "main"), 3)
    started = time.monotonic()
    with PromotionLock(lock_path(str(tmp_path), "r", "o/a", "v3-1-test"), owner="run-B").hold():
        assert time.monotonic() - started < 0.5
    holder.terminate()
    holder.join(5)


def test_a_killed_holder_releases_the_lock(tmp_path):
    path = lock_path(str(tmp_path), "r", "o/a", "main")
    holder = _holder(path, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(5)
    started = time.monotonic()
    with PromotionLock(path, owner="run-B", poll=0.05).hold():
        assert time.monotonic() - started < 1


def test_waiting_is_bounded(tmp_path):
    path = lock_path(str(tmp_path), "r", "o/a", "main")
    holder = _holder(path, 5)
    with pytest.raises(PromotionLockTimeout, match=r"held by run-A .*after 1s; latest was not changed") as error:
        with PromotionLock(path, owner="run-B", timeout=1, poll=0.1).hold():
            pytest.fail("got a lock that is held")
    assert isinstance(error.value, PromotionRefused)
    holder.terminate()
    holder.join(5)
