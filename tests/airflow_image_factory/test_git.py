"""git.py against real repositories: a bare repository on disk, as the stack's source.git is."""

import subprocess

import pytest

from airflow_image_factory.exceptions import SourceRepositoryError
from airflow_image_factory.git import BranchFiles, branch_head

AUTHOR = "Image factory test <test@example.invalid>"


@pytest.fixture
def remote(tmp_path):
    path = tmp_path / "source.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    return str(path)


def test_a_missing_branch_starts_empty_and_the_first_commit_creates_it(remote):
    assert branch_head(remote, "constraints-main") is None
    with BranchFiles(remote, "constraints-main") as files:
        assert files.head is None and files.names() == []
        sha = files.commit_and_push({"constraints-3.11.txt": "a==1\n"}, message="first", author=AUTHOR)
    assert branch_head(remote, "constraints-main") == sha
    with BranchFiles(remote, "constraints-main") as files:
        assert files.names() == ["constraints-3.11.txt"]
        assert files.read("constraints-3.11.txt") == "a==1\n"
        assert files.read("constraints-3.13.txt") is None
        second = files.commit_and_push({"constraints-3.13.txt": "a==2\n"}, message="second", author=AUTHOR)
    log = subprocess.run(["git", "--git-dir", remote, "log", "--format=%an <%ae>|%s", second],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert log == [f"{AUTHOR}|second", f"{AUTHOR}|first"]


def test_a_branch_that_moved_meanwhile_is_never_overwritten(remote):
    with BranchFiles(remote, "constraints-main") as files:
        files.commit_and_push({"constraints-3.11.txt": "a==1\n"}, message="first", author=AUTHOR)
    with BranchFiles(remote, "constraints-main") as slow, BranchFiles(remote, "constraints-main") as fast:
        winner = fast.commit_and_push({"constraints-3.11.txt": "a==2\n"}, message="fast", author=AUTHOR)
        with pytest.raises(SourceRepositoryError, match="refused"):
            slow.commit_and_push({"constraints-3.11.txt": "a==3\n"}, message="slow", author=AUTHOR)
    assert branch_head(remote, "constraints-main") == winner


def test_file_names_must_be_plain(remote):
    with BranchFiles(remote, "c") as files, pytest.raises(ValueError, match="plain file name"):
        files.commit_and_push({"../x.txt": "a==1\n"}, message="m", author=AUTHOR)


def test_an_unreadable_repository_is_a_clear_error(tmp_path):
    with pytest.raises(SourceRepositoryError, match="cannot read"):
        branch_head(str(tmp_path / "nope.git"), "main")
