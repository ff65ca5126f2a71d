"""The source repository, through the ``git`` CLI: read a branch's head, read files, fetch a commit's
tree, ask whether a commit is on a branch, commit and push.

Every call works in a throw-away directory with a shallow (or blob-less) fetch, so the worker never
keeps a clone, and the repository can be any URL git understands (the stack uses a local bare one).
The one thing kept is :func:`fetch_commit`'s tree per commit, which never changes once fetched.
Pushes are never forced: a branch that moved meanwhile makes the push fail with a clear message.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from airflow_image_factory.exceptions import BranchNotFound, SourceRepositoryError, SourceRepositoryUnreadable

log = logging.getLogger(__name__)
GIT_TIMEOUT = 300
# ls-remote only lists refs: a remote that has not answered by then is not going to (settings:
# git_ls_remote_timeout); fetches and pushes move data and keep GIT_TIMEOUT (git_timeout).
LS_REMOTE_TIMEOUT = 30

_SHA = re.compile(r"[0-9a-f]{40}")
# Fetching one commit by its SHA needs protocol v2: a v0 server only hands out advertised tips (branch
# and tag heads) unless it sets uploadpack.allowReachableSHA1InWant. v2 is git's default since 2.26,
# but a user's config may pin v0, so every fetch pins v2; auto-maintenance is pointless in a scratch repo.
_FETCH_CONFIG = ("-c", "protocol.version=2", "-c", "maintenance.auto=false", "-c", "gc.auto=0")
# For a local repository (plain path or file://, both served by a git-upload-pack child over pipes)
# git strips -c settings from that child's environment, so only this gets uploadpack.allowFilter to
# it; without it the server ignores --filter and sends every blob. git adds the quoted path itself.
_LOCAL_UPLOAD_PACK = "git -c uploadpack.allowFilter=true upload-pack"
# $GIT_DIR/info/attributes overrides the tree's .gitattributes: the checkout gets the committed bytes,
# not end-of-line conversion, $Id$ expansion, re-encoding or a filter driver (git-lfs) the worker may lack.
_RAW_ATTRIBUTES = "* -text -ident -filter -working-tree-encoding\n"
# fetch_commit builds in cache_dir/.tmp-*; prune_commit_cache moves doomed trees to .trash-* first.
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
TEMP_DIR_GRACE = 3600
# What a server answers when asked for an object it does not hold (protocol v2), and what git says
# when the server only speaks v0 and does not advertise the commit (it may still hold it).
_NOT_THERE = "not our ref"
_NOT_ADVERTISED = ("unadvertised object", "no such remote ref")
_GLOBAL_OPTIONS_WITH_VALUE = {"-c", "-C", "--git-dir", "--work-tree"}
# What git says when the repository itself is the problem (no such repository, not one, no access, a
# scheme git has no helper for): no retry mends these. Anything else (refused or dropped connections,
# timeouts, 5xx, name lookups) may be passing, and stays retryable.
_UNREADABLE = re.compile(
    r"does not appear to be a git repository|not a git repository|repository '[^']*' not found|"
    r"repository not found|returned error: 40[134]|authentication failed|could not read (username|password)|"
    r"terminal prompts disabled|permission denied \(|access denied|not exported|unable to find remote helper|"
    r"no such file or directory",
    re.IGNORECASE,
)


def shown_url(url: str) -> str:
    """``url`` as errors and logs show it: without a password or token in it (``https://user:tok@host/x``
    → ``https://host/x``). scp-like ``user@host:path`` has no secret in it and stays as it is."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _scrub(text: str, url: str | None) -> str:
    """git's own output with the URL as given (credentials and all) replaced by :func:`shown_url`."""
    if url and shown_url(url) != url:
        text = text.replace(url, shown_url(url))
    return re.sub(r"(://)[^/\s@]+@", r"\1", text)


def _reason(stderr: str) -> str:
    """git's one-line reason: its first ``fatal:`` (or ``error:``) line, without the prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for prefix in ("fatal:", "error:", "remote:"):
        for line in lines:
            if line.lower().startswith(prefix):
                return line[len(prefix):].strip()
    return lines[-1] if lines else "no reason given"


def _describe(args: Sequence[str]) -> str:
    """The subcommand and its first argument, past git's global options (``-c k=v``, ``--git-dir D``)."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] in _GLOBAL_OPTIONS_WITH_VALUE else rest[1:]
    return " ".join(rest[:2]) or " ".join(args[:2])


def _git(
    args: Sequence[str],
    *,
    cwd: str | None = None,
    check: bool = True,
    timeout: float = GIT_TIMEOUT,
    remote: str | None = None,
) -> subprocess.CompletedProcess:
    """Run git without a prompt (a missing credential fails instead of hanging); ``remote`` names the
    repository talked to, for the errors (shown without credentials, as is git's output).

    git runs in a process group of its own: on a timeout (or any exception here, such as Airflow's
    execution timeout) the whole group is killed - git and the helpers it started (git-remote-http,
    ssh) - so nothing keeps the connection or the scratch directory after the call.
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    what = _describe(args)
    try:
        process = subprocess.Popen(
            ["git", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise SourceRepositoryError(f"git {what} failed: {exc}") from exc
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(process)
        of = f" of {shown_url(remote)}" if remote else ""
        raise SourceRepositoryError(f"git {what}{of} timed out after {timeout:g}s") from exc
    except BaseException:
        _kill_group(process)
        raise
    stderr = _scrub(stderr, remote)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        at = f" ({shown_url(remote)})" if remote else ""
        raise SourceRepositoryError(f"git {what} failed{at}: {result.stderr.strip()[-800:]}")
    return result


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL git's process group, then reap git (its pipes close once the whole group is gone)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:  # a helper that left the group still holds a pipe: stop waiting
        process.kill()
        process.wait(timeout=10)


def _is_local(url: str) -> bool:
    """Whether git serves ``url`` from this machine: file://, or a path (git's rule: no colon, or a
    slash before the first colon; ``host:path`` is ssh and ``helper::address`` a remote helper)."""
    if url.startswith("file://"):
        return True
    colon, slash = url.find(":"), url.find("/")
    return colon < 0 or 0 <= slash < colon


def _absolute(url: str) -> str:
    """A relative local path made absolute: the git calls here run inside a scratch directory."""
    if _is_local(url) and not url.startswith("file://") and not os.path.isabs(url):
        return os.path.abspath(url)
    return url


def _full_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA.fullmatch(sha.lower()):
        raise ValueError(f"commit {sha!r} must be a full 40-character hex SHA")
    return sha.lower()


def _left(deadline: float) -> float:
    """What remains of one call's time budget, spread over its git commands."""
    return max(deadline - time.monotonic(), 0.01)


def branch_head(url: str, branch: str, *, timeout: float = LS_REMOTE_TIMEOUT) -> str | None:
    """The commit ``branch`` points at, read with ``git ls-remote`` (no clone); None when it does not exist.

    Raises :class:`SourceRepositoryUnreadable` (permanent) when the repository itself cannot be read,
    and :class:`SourceRepositoryError` for what may pass (a refused connection, a remote that says
    nothing for ``timeout`` seconds); both name the repository, without credentials.
    """
    result = _git(["ls-remote", "--heads", _absolute(url), f"refs/heads/{branch}"], check=False, remote=url,
                  timeout=timeout)
    if result.returncode != 0:
        stderr = result.stderr.strip()
        if _UNREADABLE.search(stderr):
            raise SourceRepositoryUnreadable(f"source_repo: cannot read {shown_url(url)}: {_reason(stderr)}")
        raise SourceRepositoryError(f"cannot read {shown_url(url)}: {stderr[-800:]}")
    for line in result.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    return None


class BranchFiles:
    """A shallow checkout of one branch in a temporary directory (or an empty one if it is missing).

    ``ls_remote_timeout`` bounds the look at the branch's head, ``timeout`` each fetch and the push.
    """

    def __init__(self, url: str, branch: str, *, timeout: float = GIT_TIMEOUT,
                 ls_remote_timeout: float = LS_REMOTE_TIMEOUT):
        self.url = url
        self.branch = branch
        self.timeout = timeout
        self.ls_remote_timeout = ls_remote_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="image-factory-git-")
        self.path = self._tmp.name
        self.head: str | None = None

    def __enter__(self) -> BranchFiles:
        _git(["init", "-q", self.path])
        if branch_head(self.url, self.branch, timeout=self.ls_remote_timeout) is not None:
            fetch = ["fetch", "-q", "--depth", "1", _absolute(self.url), f"refs/heads/{self.branch}"]
            _git(fetch, cwd=self.path, remote=self.url, timeout=self.timeout)
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
        result = _git(
            ["push", "-q", _absolute(self.url), f"HEAD:refs/heads/{self.branch}"], cwd=self.path, check=False,
            remote=self.url, timeout=self.timeout,
        )
        if result.returncode != 0:
            raise SourceRepositoryError(
                f"push of {self.branch} to {shown_url(self.url)} was refused (not forced; did the branch move?): "
                f"{result.stderr.strip()[-800:]}"
            )
        log.info("Pushed %s to %s %s", sha, shown_url(self.url), self.branch)
        return sha


def fetch_commit(url: str, sha: str, cache_dir: Path | str, *, timeout: float = GIT_TIMEOUT) -> Path:
    """``cache_dir/<sha>``: exactly the tree of commit ``sha`` of ``url`` (modes, symlinks, committed
    bytes; no ``.git``), from a depth-1 fetch of that one commit. A commit never changes, so the tree is
    kept per worker and a second call returns it without touching the network. Shared: read it only.

    Safe with other processes fetching the same commit: each builds in its own temporary directory in
    ``cache_dir`` and renames it into place, so ``cache_dir/<sha>`` is complete or absent, never partial.
    """
    sha = _full_sha(sha)
    cache = Path(cache_dir)
    target = cache / sha
    if target.is_dir():
        try:
            os.utime(target)  # most recently used, for prune_commit_cache
        except FileNotFoundError:
            pass  # pruned this very moment: fetch it again
        else:
            return target
    deadline = time.monotonic() + timeout
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{sha[:12]}-", dir=cache))
    try:
        git_dir, tree = scratch / "git", scratch / "tree"
        _git(["init", "-q", "--bare", str(git_dir)], timeout=_left(deadline))
        (git_dir / "info").mkdir(exist_ok=True)
        (git_dir / "info" / "attributes").write_text(_RAW_ATTRIBUTES)
        fetch = [*_FETCH_CONFIG, "fetch", "-q", "--no-tags", "--depth", "1", "--", _absolute(url), sha]
        result = _git(fetch, cwd=str(git_dir), check=False, timeout=_left(deadline), remote=url)
        if result.returncode != 0:
            stderr = result.stderr.strip()
            if _NOT_THERE in stderr:
                raise SourceRepositoryError(f"commit {sha} is not in {shown_url(url)}: {stderr[-400:]}")
            if any(marker in stderr for marker in _NOT_ADVERTISED):
                raise SourceRepositoryError(
                    f"commit {sha} is not in {shown_url(url)}, or that server only hands out branch and tag heads (it "
                    f"speaks protocol v0 without uploadpack.allowReachableSHA1InWant): {stderr[-400:]}"
                )
            if _UNREADABLE.search(stderr):
                raise SourceRepositoryUnreadable(f"source_repo: cannot read {shown_url(url)}: {_reason(stderr)}")
            raise SourceRepositoryError(f"cannot fetch commit {sha} from {shown_url(url)}: {stderr[-800:]}")
        # What arrived must be that commit (not a tag or tree that happens to have the SHA's name).
        verify = ["rev-parse", "--verify", "-q", "FETCH_HEAD^{commit}"]
        got = _git(verify, cwd=str(git_dir), check=False, timeout=_left(deadline))
        if got.stdout.strip() != sha:
            raise SourceRepositoryError(
                f"{sha} in {shown_url(url)} is not a commit (fetched {got.stdout.strip() or 'nothing'})"
            )
        tree.mkdir()
        # One process builds the index and writes the tree from it: faster than archive | tar, and
        # exact (archive would apply export-ignore). Symlinks as symlinks whatever the worker's config.
        checkout = ["-c", "core.symlinks=true", "--work-tree", str(tree)]
        _git([*checkout, "read-tree", "--reset", "-u", sha], cwd=str(git_dir), timeout=_left(deadline))
        try:
            os.rename(tree, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not target.is_dir():
                raise
            log.info("Commit %s was fetched by another task meanwhile; using its tree", sha)
        else:
            log.info("Fetched commit %s of %s into %s", sha, shown_url(url), target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    os.utime(target)
    return target


def prune_commit_cache(cache_dir: Path | str, keep: int) -> list[str]:
    """Keep the ``keep`` most recently used trees of :func:`fetch_commit` (by mtime, which a cache hit
    touches) and remove the rest, plus leftovers of fetches that died. Returns the SHAs removed.

    A temporary directory younger than an hour may be a fetch still writing, so it stays. A tree is
    renamed away before it is deleted, so a concurrent fetch_commit never mistakes a half-deleted one
    for a cache hit; a task still reading a tree it got earlier is not protected: keep enough.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, not {keep}")
    cache = Path(cache_dir)
    if not cache.is_dir():
        return []
    now = time.time()
    trees: list[tuple[float, Path]] = []
    for entry in cache.iterdir():
        try:
            if _SHA.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                trees.append((entry.stat().st_mtime, entry))
            elif entry.name.startswith(_TRASH_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith(_TMP_PREFIX) and now - _newest_mtime(entry) > TEMP_DIR_GRACE:
                log.info("Removing %s, left by a fetch that did not finish", entry)
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:  # another prune, or the fetch that owned it, got there first
            continue
    trees.sort(key=lambda item: item[0], reverse=True)
    removed = []
    for _, entry in trees[keep:]:
        trash = Path(tempfile.mkdtemp(prefix=f"{_TRASH_PREFIX}{entry.name[:12]}-", dir=cache))
        try:
            os.rename(entry, trash / entry.name)
        except FileNotFoundError:
            pass  # another prune removed it
        else:
            removed.append(entry.name)
        shutil.rmtree(trash, ignore_errors=True)
    if removed:
        log.info("Pruned %d commit trees from %s, kept %d", len(removed), cache, min(keep, len(trees)))
    return removed


def _newest_mtime(path: Path) -> float:
    """A fetch in progress writes into the temp dir's children (git/, tree/), not the dir itself."""
    newest = path.stat().st_mtime
    for child in path.iterdir():
        try:
            newest = max(newest, child.stat().st_mtime)
        except FileNotFoundError:
            continue
    return newest


def is_ancestor(url: str, sha: str, branch: str, *, timeout: float = GIT_TIMEOUT,
                ls_remote_timeout: float = LS_REMOTE_TIMEOUT) -> bool:
    """Whether commit ``sha`` (40 hex digits) is on ``branch`` of ``url`` now (its head, or an ancestor
    of it). False when the repository does not know ``sha``; a missing branch is an error."""
    return commit_on_branch(url, _full_sha(sha), branch, timeout=timeout,
                            ls_remote_timeout=ls_remote_timeout) is not None


def commit_on_branch(url: str, sha: str, branch: str, *, timeout: float = GIT_TIMEOUT,
                     ls_remote_timeout: float = LS_REMOTE_TIMEOUT) -> str | None:
    """The full SHA of commit ``sha`` (full, or an abbreviation of at least 7 hex digits) when it is on
    ``branch`` of ``url`` now; None when it is not (or the repository does not know it).

    The branch is looked up first with ``git ls-remote`` (``ls_remote_timeout``): a missing branch or an
    unreadable repository fails in seconds, naming it (:class:`BranchNotFound`,
    :class:`SourceRepositoryUnreadable`). Then only the branch's commits are fetched
    (``--filter=tree:0``: no trees, no blobs; ``timeout``) into a throw-away repository, which is all
    ``git merge-base --is-ancestor`` reads.
    """
    sha = sha.lower()
    if not re.fullmatch(r"[0-9a-f]{7,40}", sha):
        raise ValueError(f"{sha!r} is not a commit id of 7 to 40 hex digits")
    if branch_head(url, branch, timeout=ls_remote_timeout) is None:
        raise BranchNotFound(f"branch: {branch!r} does not exist in {shown_url(url)}")
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="image-factory-git-") as scratch:
        _git(["init", "-q", "--bare", scratch], timeout=_left(deadline))
        # A filtered fetch needs a promisor remote; "origin" exists only for this command. A server
        # that does not allow filters (no uploadpack.allowFilter) makes git warn and send everything:
        # slower, still correct. For a local repository _LOCAL_UPLOAD_PACK allows it on the serving side.
        remote = ["-c", f"remote.origin.url={_absolute(url)}", "-c", "remote.origin.promisor=true"]
        upload_pack = ["--upload-pack", _LOCAL_UPLOAD_PACK] if _is_local(url) else []
        fetch = [*_FETCH_CONFIG, *remote, "fetch", "-q", "--no-tags", "--filter=tree:0", *upload_pack]
        result = _git(
            [*fetch, "--", "origin", f"refs/heads/{branch}"],
            cwd=scratch, check=False, timeout=_left(deadline), remote=url,
        )
        if result.returncode != 0:
            stderr = result.stderr.strip()
            if "couldn't find remote ref" in stderr:  # deleted since the look above
                raise BranchNotFound(f"branch: {branch!r} does not exist in {shown_url(url)}")
            raise SourceRepositoryError(f"cannot fetch branch {branch} of {shown_url(url)}: {stderr[-800:]}")
        # The fetch recorded origin as promisor (remote.origin.partialclonefilter): drop it, or asking
        # about a SHA that is not here would make git try to fetch it lazily.
        _git(["config", "--remove-section", "remote.origin"], cwd=scratch, check=False, timeout=_left(deadline))
        present = _git(["rev-parse", "--verify", "-q", f"{sha}^{{commit}}"], cwd=scratch, check=False,
                       timeout=_left(deadline))
        if present.returncode != 0:
            return None  # not among the branch's commits: not on it (or unknown to the repository)
        full = present.stdout.strip()
        result = _git(
            ["merge-base", "--is-ancestor", full, "FETCH_HEAD"], cwd=scratch, check=False, timeout=_left(deadline)
        )
        if result.returncode not in (0, 1):
            raise SourceRepositoryError(f"git merge-base failed for {sha} on {branch}: {result.stderr.strip()}")
        return full if result.returncode == 0 else None
