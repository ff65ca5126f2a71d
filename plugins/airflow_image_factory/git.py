"""The source repository, through the ``git`` CLI: read a branch's head, read files, commit and push.

Every call works in a throw-away directory with a shallow fetch of one branch, so the worker never
keeps a clone, and the repository can be any URL git understands (the stack uses a local bare one).
Pushes are never forced: a branch that moved meanwhile makes the push fail with a clear message.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from airflow_image_factory.exceptions import SourceRepositoryError

log = logging.getLogger(__name__)
GIT_TIMEOUT = 300


def _git(args: Sequence[str], *, cwd: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceRepositoryError(f"git {args[0]} failed: {exc}") from exc
    if check and result.returncode != 0:
        raise SourceRepositoryError(f"git {' '.join(args[:2])} failed: {result.stderr.strip()[-800:]}")
    return result


def branch_head(url: str, branch: str) -> str | None:
    """The commit ``branch`` points at, read with ``git ls-remote`` (no clone); None when it does not exist."""
    result = _git(["ls-remote", "--heads", url, f"refs/heads/{branch}"], check=False)
    if result.returncode != 0:
        raise SourceRepositoryError(f"cannot read {url}: {result.stderr.strip()}")
    for line in result.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    return None


class BranchFiles:
    """A shallow checkout of one branch in a temporary directory (or an empty one if it is missing)."""

    def __init__(self, url: str, branch: str):
        self.url = url
        self.branch = branch
        self._tmp = tempfile.TemporaryDirectory(prefix="image-factory-git-")
        self.path = self._tmp.name
        self.head: str | None = None

    def __enter__(self) -> BranchFiles:
        _git(["init", "-q", self.path])
        if branch_head(self.url, self.branch) is not None:
            _git(["fetch", "-q", "--depth", "1", self.url, f"refs/heads/{self.branch}"], cwd=self.path)
            _git(["checkout", "-q", "-B", self.branch, "FETCH_HEAD"], cwd=self.path)
            self.head = _git(["rev-parse", "HEAD"], cwd=self.path).stdout.strip()
        else:
            _git(["checkout", "-q", "--orphan", self.branch], cwd=self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def names(self) -> list[str]:
        return sorted(p.name for p in Path(self.path).iterdir() if p.is_file())

    def read(self, name: str) -> str | None:
        file = Path(self.path, name)
        return file.read_text() if file.is_file() else None

    def commit_and_push(self, files: Mapping[str, str], *, message: str, author: str) -> str:
        """Write ``files``, commit, push to the branch (fast-forward only). Returns the new commit."""
        for name, text in files.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"constraints file name {name!r} must be a plain file name")
            Path(self.path, name).write_text(text)
        name, _, email = author.partition("<")
        identity = ["-c", f"user.name={name.strip()}", "-c", f"user.email={email.rstrip('>').strip()}"]
        _git(["add", "--", *files], cwd=self.path)
        _git([*identity, "commit", "-q", "-m", message], cwd=self.path)
        sha = _git(["rev-parse", "HEAD"], cwd=self.path).stdout.strip()
        result = _git(["push", "-q", self.url, f"HEAD:refs/heads/{self.branch}"], cwd=self.path, check=False)
        if result.returncode != 0:
            raise SourceRepositoryError(
                f"push of {self.branch} to {self.url} was refused (not forced; did the branch move?): "
                f"{result.stderr.strip()[-800:]}"
            )
        log.info("Pushed %s to %s %s", sha, self.url, self.branch)
        return sha
