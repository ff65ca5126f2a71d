"""The same source code path against the real apache/airflow repository, where GitHub is reachable.

Here (no GitHub) it skips with the reason; on a machine that reaches GitHub it fetches main's head
exactly as a build does, reads its distributions, stages it and writes its metadata wheels.
"""

from __future__ import annotations

import subprocess

import pytest

from airflow_image_factory.clients.git import branch_head, fetch_commit
from airflow_image_factory.clients.sources import read_source_tree, stage_sources, write_metadata_wheels

pytestmark = pytest.mark.slow

URL = "https://github.com/apache/airflow.git"


@pytest.fixture(scope="module")
def head() -> str:
    try:
        probe = subprocess.run(["git", "ls-remote", "--heads", URL, "refs/heads/main"], capture_output=True,
                               text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{URL} did not answer within 20 s (GitHub is not reachable from this machine)")
    if probe.returncode != 0 or not probe.stdout.strip():
        pytest.skip(f"{URL} is not reachable from this machine: {probe.stderr.strip()[-200:]}")
    sha = branch_head(URL, "main")
    assert sha
    return sha


def test_the_real_main_stages_with_its_shared_libraries(head, tmp_path_factory):
    checkout = fetch_commit(URL, head, tmp_path_factory.mktemp("cache"), timeout=900)
    tree = read_source_tree(checkout)
    assert tree.version  # airflow-core's own
    staged = tmp_path_factory.mktemp("context") / "airflow-sources"
    stage_sources(checkout, staged)
    links = [p for p in (staged / "airflow-core/src/airflow/_shared").iterdir() if p.is_symlink()]
    assert links, "the real repository links airflow-core's _shared libraries into shared/"
    for link in links:
        assert link.resolve().is_dir(), f"{link} points outside what was staged"
    assert not (staged / "providers").exists()
    wheels = write_metadata_wheels(tree, tmp_path_factory.mktemp("wheels"))
    assert len(wheels) == 3
