"""Which pytest process ("stream") runs which test module when `make test` runs them at once
(tests/run_streams.py). The first stream has main's build and the stack's real Airflow (``main_build``,
``real_airflow``) and everything else; the second the modules listed here: the official images'
build (``official_build``) and what uses it, and the modules that build into repositories of their own;
the third the multi-platform build, whose arm64 half is emulated: one core's work for most of the run,
started at once beside the other two rather than after either.
A module that uses a session fixture of one stream belongs in that stream, or the fixture runs twice."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

STREAM_VARIABLE = "IMAGE_FACTORY_TEST_STREAM"
STREAMS = ("main", "official", "platforms")
REPO_ROOT = Path(__file__).resolve().parents[2]
# Paths (files, or folders ending in "/") relative to the repository root.
# Balanced by the modules' times in one stream (about 40 minutes each on 2 cores): the flaky-registry
# and auth-registry runs stay with main's build, whose warm build cache they use.
SECOND_STREAM = (
    "tests/airflow_image_factory/deploy/",  # the official images, deployed (chart defaults, smoke runs)
    "tests/dags/test_official_image_stack.py",
    "tests/dags/test_nightly_images_stack.py",
    "tests/dags/test_release_images_stack.py",
    "tests/reliability/test_malformed_confs.py",
    "tests/reliability/test_postgres_lock_stack.py",
    "tests/reliability/test_promotion_lock.py",
    "tests/reliability/test_promotion_lock_choice.py",
)


THIRD_STREAM = ("tests/dags/test_platforms_stack.py",)
STREAM_MODULES = {STREAMS[1]: SECOND_STREAM, STREAMS[2]: THIRD_STREAM}


def stream_of(path: Path) -> str:
    relative = Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    for stream, paths in STREAM_MODULES.items():
        if any(relative.startswith(prefix) if prefix.endswith("/") else relative == prefix for prefix in paths):
            return stream
    return STREAMS[0]


def own_airflow_home(home: Path, stream: str) -> Path:
    """A stream's own copy of the stack's Airflow home, made anew: the SQLite metadata database copied
    with SQLite's backup API (consistent even while it is written), ``airflow.cfg`` pointing at the copy.
    Two streams' ``airflow dags test`` runs then never wait on, or lock, one database file."""
    copy = home.parent / f"{home.name}-{stream}"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    config = home / "airflow.cfg"
    if config.is_file():
        (copy / "airflow.cfg").write_text(config.read_text().replace(str(home), str(copy)))
    source, target = sqlite3.connect(home / "airflow.db"), sqlite3.connect(copy / "airflow.db")
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return copy
