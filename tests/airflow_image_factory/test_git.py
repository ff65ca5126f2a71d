"""git.py against real repositories: a bare repository on disk, as the stack's source.git is."""

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from airflow_image_factory.clients import git
from airflow_image_factory.clients.git import BranchFiles, branch_head
from airflow_image_factory.exceptions import BranchNotFound, SourceRepositoryError, SourceRepositoryUnreadable

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
    unreadable = r"source_repo: cannot read .*nope\.git: .*does not appear to be a git repository$"
    with pytest.raises(SourceRepositoryUnreadable, match=unreadable) as error:
        branch_head(str(tmp_path / "nope.git"), "main")
    assert error.value.permanent and "\n" not in str(error.value)  # git's one-line reason, no retry


# --- fetch_commit, prune_commit_cache, is_ancestor ---


def _run(*args: str, cwd=None) -> str:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


class Work:
    """A working repository that commits and pushes to the bare remote, as a developer would."""

    def __init__(self, path: Path, remote: str):
        self.path, self.remote = path, remote
        _run("git", "init", "-q", "-b", "main", str(path))
        _run("git", "config", "user.name", "Test", cwd=path)
        _run("git", "config", "user.email", "test@example.invalid", cwd=path)

    def commit(self, files: dict[str, str | None], *, executable=(), links=None, branch="main") -> str:
        for name, text in files.items():
            file = self.path / name
            if text is None:
                file.unlink()
                continue
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(text)
            file.chmod(0o755 if name in executable else 0o644)
        for name, target in (links or {}).items():
            (self.path / name).symlink_to(target)
        _run("git", "add", "-A", cwd=self.path)
        _run("git", "commit", "-q", "-m", f"change {sorted(files)}", cwd=self.path)
        _run("git", "push", "-q", self.remote, f"HEAD:refs/heads/{branch}", cwd=self.path)
        return _run("git", "rev-parse", "HEAD", cwd=self.path)

    def switch(self, branch: str, start: str) -> None:
        _run("git", "checkout", "-q", "-B", branch, start, cwd=self.path)


@pytest.fixture
def work(tmp_path, remote):
    return Work(tmp_path / "work", remote)


@pytest.fixture(params=["path", "file-url"])
def url(request, remote):
    """git takes both; a plain path and file:// are served the same way (upload-pack over pipes)."""
    return remote if request.param == "path" else Path(remote).as_uri()


def _tree(root: Path) -> dict[str, str]:
    """Every entry under root: a file's text, or "-> target" for a symlink (not followed)."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            entries[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else path.read_text()
    return entries


FILES = {
    "README.md": "Airflow\n",
    "scripts/ci/run.sh": "#!/bin/sh\necho run\n",
    "airflow/__init__.py": "__version__ = '3.1.0'\n",
    "docs/notes.txt": "line 1\nline 2\n",
    # A checkout would write docs/notes.txt with CRLF and expand $Id$; the build context gets the blobs.
    ".gitattributes": "*.txt text eol=crlf\n*.py ident\n",
}


def test_fetch_commit_gives_exactly_the_commits_tree(work, url, tmp_path):
    sha = work.commit(FILES, executable={"scripts/ci/run.sh"}, links={"link-to-readme": "README.md"})
    tree = git.fetch_commit(url, sha, tmp_path / "cache")

    assert tree == tmp_path / "cache" / sha
    assert _tree(tree) == {**FILES, "link-to-readme": "-> README.md"}
    assert (tree / "docs" / "notes.txt").read_bytes() == b"line 1\nline 2\n"
    assert (tree / "link-to-readme").is_symlink()
    assert (tree / "scripts/ci/run.sh").stat().st_mode & 0o111 == 0o111
    assert (tree / "README.md").stat().st_mode & 0o111 == 0
    assert not (tree / ".git").exists()
    assert os.listdir(tmp_path / "cache") == [sha]  # the scratch repository is gone


def test_a_second_fetch_is_a_cache_hit_that_runs_no_git(work, remote, tmp_path, monkeypatch):
    sha = work.commit({"a.txt": "a\n"})
    first = git.fetch_commit(remote, sha, tmp_path / "cache")
    os.utime(first, (1_000_000, 1_000_000))
    shutil.move(remote, tmp_path / "gone.git")  # the remote is unreadable now

    def no_git(*args, **kwargs):
        raise AssertionError(f"git ran on a cache hit: {args}")

    monkeypatch.setattr(git.subprocess, "run", no_git)
    assert git.fetch_commit(remote, sha.upper(), tmp_path / "cache") == first
    assert _tree(first) == {"a.txt": "a\n"}
    assert first.stat().st_mtime > 1_000_000  # touched: most recently used, for prune_commit_cache


def test_an_older_commit_of_the_branch_gives_its_older_content(work, url, tmp_path):
    old = work.commit({"a.txt": "1\n", "gone.txt": "x\n"})
    new = work.commit({"a.txt": "2\n", "gone.txt": None, "b.txt": "b\n"})
    assert _tree(git.fetch_commit(url, old, tmp_path / "cache")) == {"a.txt": "1\n", "gone.txt": "x\n"}
    assert _tree(git.fetch_commit(url, new, tmp_path / "cache")) == {"a.txt": "2\n", "b.txt": "b\n"}


def test_a_commit_that_is_no_branch_head_is_fetched_even_if_the_user_pins_protocol_v0(
    work, remote, tmp_path, monkeypatch
):
    """v0 only serves advertised tips (without uploadpack.allowReachableSHA1InWant); fetch_commit pins v2."""
    old = work.commit({"a.txt": "1\n"})
    work.commit({"a.txt": "2\n"})
    config = tmp_path / "gitconfig"
    config.write_text("[protocol]\n\tversion = 0\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    assert _tree(git.fetch_commit(remote, old, tmp_path / "cache")) == {"a.txt": "1\n"}


def test_two_fetches_of_one_commit_racing_to_rename_both_get_the_complete_tree(work, remote, tmp_path, monkeypatch):
    sha = work.commit(FILES, executable={"scripts/ci/run.sh"})
    both_built = threading.Barrier(2, timeout=60)
    rename = os.rename

    def rename_together(src, dst):
        both_built.wait()  # both have a complete tree; exactly one rename can win
        rename(src, dst)

    monkeypatch.setattr(git.os, "rename", rename_together)
    with ThreadPoolExecutor(2) as pool:
        trees = list(pool.map(lambda _: git.fetch_commit(remote, sha, tmp_path / "cache"), range(2)))
    assert trees == [tmp_path / "cache" / sha] * 2
    assert _tree(trees[0]) == FILES
    assert os.listdir(tmp_path / "cache") == [sha]  # the loser deleted its copy


def test_concurrent_fetches_in_separate_processes_all_get_the_complete_tree(work, remote, tmp_path):
    sha = work.commit(FILES)
    script = (
        "import sys; from airflow_image_factory.clients.git import fetch_commit; "
        "print(fetch_commit(sys.argv[1], sys.argv[2], sys.argv[3]))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(git.__file__).parent.parent)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, remote, sha, str(tmp_path / "cache")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    assert {out.strip() for out, _ in outputs} == {str(tmp_path / "cache" / sha)}
    assert _tree(tmp_path / "cache" / sha) == FILES
    assert os.listdir(tmp_path / "cache") == [sha]


def test_a_commit_the_remote_does_not_have_is_a_clear_error(work, url, tmp_path):
    work.commit({"a.txt": "a\n"})
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(SourceRepositoryError, match=f"commit {missing} is not in {re.escape(url)}"):
        git.fetch_commit(url, missing, tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []  # nothing half-made is left, so nothing is a cache hit


def test_a_relative_path_is_the_callers_not_the_scratch_dirs(work, remote, tmp_path, monkeypatch):
    sha = work.commit({"a.txt": "a\n"})
    monkeypatch.chdir(Path(remote).parent)
    assert _tree(git.fetch_commit(Path(remote).name, sha, tmp_path / "cache")) == {"a.txt": "a\n"}
    assert git.is_ancestor(Path(remote).name, sha, "main")


def test_a_sha_naming_a_blob_is_not_a_commit(work, remote, tmp_path):
    work.commit({"a.txt": "a\n"})
    blob = _run("git", "--git-dir", remote, "rev-parse", "main:a.txt")
    with pytest.raises(SourceRepositoryError, match="is not a commit"):
        git.fetch_commit(remote, blob, tmp_path / "cache")


def test_an_unreadable_remote_is_named(tmp_path):
    unreadable = r"source_repo: cannot read .*nope\.git: .*does not appear to be a git repository$"
    with pytest.raises(SourceRepositoryUnreadable, match=unreadable):
        git.fetch_commit(str(tmp_path / "nope.git"), "a" * 40, tmp_path / "cache")


@pytest.mark.parametrize("bad", ["abc123", "g" * 40, "a" * 39, "a" * 41, "", "HEAD", "main", " " + "a" * 40])
def test_only_a_full_hex_sha_is_accepted(bad, tmp_path):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        git.fetch_commit(str(tmp_path / "never-read.git"), bad, tmp_path / "cache")
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        git.is_ancestor(str(tmp_path / "never-read.git"), bad, "main")


def test_prune_keeps_the_most_recently_used_trees_and_young_temporary_dirs(work, remote, tmp_path):
    cache = tmp_path / "cache"
    shas = [work.commit({"a.txt": f"{n}\n"}) for n in range(4)]
    for age, sha in enumerate(shas):  # shas[0] is the newest
        os.utime(git.fetch_commit(remote, sha, cache), (time.time() - 100 * (age + 1),) * 2)
    git.fetch_commit(remote, shas[3], cache)  # a cache hit makes the oldest the most recently used
    young, old = cache / ".tmp-young", cache / ".tmp-old"
    for scratch in (young, old):
        (scratch / "git").mkdir(parents=True)
    for path in (old, old / "git"):
        os.utime(path, (time.time() - 2 * git.TEMP_DIR_GRACE,) * 2)

    removed = git.prune_commit_cache(cache, keep=2)

    assert sorted(removed) == sorted(shas[1:3])
    assert sorted(os.listdir(cache)) == sorted([shas[0], shas[3], ".tmp-young"])
    assert git.prune_commit_cache(cache, keep=2) == []
    assert git.prune_commit_cache(tmp_path / "no-cache-yet", keep=2) == []


@pytest.fixture
def history(work):
    """main: c1 - c2 - c3 (head); feature: c1 - f1, pushed, never merged."""
    c1 = work.commit({"a.txt": "1\n"})
    c2 = work.commit({"a.txt": "2\n"})
    c3 = work.commit({"a.txt": "3\n"})
    work.switch("feature", c1)
    f1 = work.commit({"f.txt": "f\n"}, branch="feature")
    return {"c1": c1, "c2": c2, "c3": c3, "f1": f1}


def test_is_ancestor_for_the_head_and_older_commits_of_the_branch(history, url):
    assert git.is_ancestor(url, history["c3"], "main")
    assert git.is_ancestor(url, history["c1"], "main")
    assert git.is_ancestor(url, history["c1"], "feature")


def test_a_commit_of_another_branch_not_merged_is_no_ancestor(history, url):
    assert not git.is_ancestor(url, history["f1"], "main")
    assert not git.is_ancestor(url, history["c3"], "feature")


def test_a_merged_commit_of_another_branch_is_an_ancestor(history, work, url):
    work.switch("main", history["c3"])
    _run("git", "merge", "-q", "--no-ff", "-m", "merge feature", "feature", cwd=work.path)
    _run("git", "push", "-q", work.remote, "HEAD:refs/heads/main", cwd=work.path)
    assert git.is_ancestor(url, history["f1"], "main")


def test_an_abbreviated_commit_of_the_branch_gives_its_full_sha(history, url):
    assert git.commit_on_branch(url, history["c2"][:10].upper(), "main") == history["c2"]
    assert git.commit_on_branch(url, history["f1"][:10], "main") is None
    with pytest.raises(ValueError, match="7 to 40 hex digits"):
        git.commit_on_branch(url, "abc", "main")


def test_an_unknown_sha_is_no_ancestor(history, url):
    assert not git.is_ancestor(url, "0123456789abcdef0123456789abcdef01234567", "main")


def test_a_missing_branch_is_an_error_naming_it(history, url):
    with pytest.raises(BranchNotFound, match=f"branch: 'no-such-branch' does not exist in {re.escape(url)}"):
        git.is_ancestor(url, history["c1"], "no-such-branch")


def test_is_ancestor_fetches_commits_only(history, url, monkeypatch):
    """No trees, no blobs: a local remote gets uploadpack.allowFilter through --upload-pack."""
    fetched: list[set[str]] = []
    real_git = git._git

    def spy(args, **kwargs):
        result = real_git(args, **kwargs)
        if "fetch" in args:
            types = _run("git", "cat-file", "--batch-all-objects", "--batch-check=%(objecttype)", cwd=kwargs["cwd"])
            fetched.append(set(types.split()))
        return result

    monkeypatch.setattr(git, "_git", spy)
    assert git.is_ancestor(url, history["c2"], "main")
    assert fetched == [{"commit"}]


def test_a_commit_not_on_the_branch_is_not_fetched_lazily(history, url, tmp_path, monkeypatch):
    """The throw-away repository is a partial clone; asking about a missing commit must not refetch."""
    trace = tmp_path / "git-trace"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    assert not git.is_ancestor(url, history["f1"], "main")
    assert not git.is_ancestor(url, "0123456789abcdef0123456789abcdef01234567", "main")
    assert trace.read_text().count("built-in: git fetch") == 2  # is_ancestor's own two, no lazy fetch


def test_a_timeout_names_the_remote():
    with pytest.raises(SourceRepositoryError, match=r"git hang of https://example.invalid/x.git timed out after 0.2s"):
        git._git(["-c", "alias.hang=!sleep 3", "hang"], timeout=0.2, remote="https://example.invalid/x.git")


# --- a remote that accepts the connection and then says nothing ---


class SilentRemote:
    """A loopback TCP server that accepts every connection, reads what it is sent, and never answers.

    ``closed`` counts the connections whose other end went away: the git process holding one (git
    itself for git://, its git-remote-http child for http://) has been killed.
    """

    def __init__(self):
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.accepted = 0
        self.closed = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._hold, args=(connection,), daemon=True).start()

    def _hold(self, connection):
        with connection:
            while connection.recv(65536):
                pass
        with self._lock:
            self.closed += 1

    def close(self):
        self._server.close()


@pytest.fixture
def silent_remote():
    remote = SilentRemote()
    yield remote
    remote.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("scheme", ["git", "http"])
def test_a_silent_remote_fails_within_the_ls_remote_bound_naming_it(silent_remote, scheme):
    url = f"{scheme}://127.0.0.1:{silent_remote.port}/x" + (".git" if scheme == "http" else "")
    started = time.monotonic()
    with pytest.raises(SourceRepositoryError, match=f"git ls-remote .*of {re.escape(url)} timed out after 2s") as error:
        branch_head(url, "main", timeout=2)
    assert time.monotonic() - started < 5
    assert not error.value.permanent  # a remote that hangs now may answer on the task's retry
    assert silent_remote.accepted == 1
    # The process group went: nothing of git holds the connection any more.
    deadline = time.monotonic() + 3
    while silent_remote.closed < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert silent_remote.closed == 1


@pytest.mark.timeout(30)
def test_credentials_in_a_remote_url_never_reach_the_message(silent_remote, tmp_path):
    url = f"http://robot:s3cret-token@127.0.0.1:{silent_remote.port}/x.git"
    with pytest.raises(SourceRepositoryError) as error:
        branch_head(url, "main", timeout=1)
    assert f"http://127.0.0.1:{silent_remote.port}/x.git" in str(error.value)
    assert "s3cret-token" not in str(error.value) and "robot" not in str(error.value)
    unreadable = f"https://robot:s3cret-token@{tmp_path.name}.invalid/x.git"
    with pytest.raises(SourceRepositoryError) as error:
        branch_head(unreadable, "main", timeout=10)
    assert "s3cret-token" not in str(error.value)


def test_shown_url_drops_userinfo_only():
    assert git.shown_url("https://user:tok@example.com:8443/a/b.git") == "https://example.com:8443/a/b.git"
    assert git.shown_url("https://example.com/a.git") == "https://example.com/a.git"
    assert git.shown_url("git@github.com:apache/airflow.git") == "git@github.com:apache/airflow.git"
    assert git.shown_url("/srv/git/source.git") == "/srv/git/source.git"


def test_a_timeout_kills_what_git_started(tmp_path):
    """The whole process group goes, not only git: here a shell alias and the sleep it runs."""
    marker = tmp_path / "still-running"
    hang = f"!sleep 3 && touch {marker}"
    with pytest.raises(SourceRepositoryError, match=r"timed out after 0\.3s"):
        git._git(["-c", f"alias.hang={hang}", "hang"], timeout=0.3)
    time.sleep(3.5)
    assert not marker.exists()


def test_commit_lookup_fails_fast_on_a_missing_branch_or_an_unreadable_repository(history, url, tmp_path):
    started = time.monotonic()
    with pytest.raises(BranchNotFound, match="branch: 'nope' does not exist"):
        git.commit_on_branch(url, history["c1"], "nope")
    with pytest.raises(SourceRepositoryUnreadable, match="source_repo: cannot read"):
        git.commit_on_branch(str(tmp_path / "missing.git"), history["c1"], "main")
    assert time.monotonic() - started < 5
