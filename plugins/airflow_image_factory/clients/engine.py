"""Building, pushing and running images on a Docker engine. Knows no naming or cache rules.

Builds go through a docker CLI because BuildKit (secrets, cache mounts, inline cache) is not in the
Docker SDK's build API; everything else uses the Docker SDK (``docker`` package).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airflow_image_factory.exceptions import BuildFailed, EngineError
from airflow_image_factory.policy.reference import name_and_tag

log = logging.getLogger(__name__)

_CACHED_STEP = re.compile(r"^#(\d+) CACHED\s*$")
_STEP = re.compile(r"^#(\d+) (\[(?:[\w.-]+ )?\s*\d+/\d+\]) (.+)$")
_DONE_STEP = re.compile(r"^#(\d+) DONE ")
_MAX_TAIL_LINES = 60


def _step_name(instruction: str) -> str:
    """A build step as a reader wants it in a log: ``RUN bash .../install_airflow.sh dependencies``,
    without the ``--mount`` options that make up most of the line."""
    return " ".join(re.sub(r"--mount=\S+", "", instruction).split())[:160]


class BuildProgress:
    """What BuildKit's plain progress says about the cache: which steps there were, which it served.

    Steps are the ``#N [stage n/m] INSTRUCTION`` lines; ``#N CACHED`` marks one served from the cache.
    A FROM only resolves (or pulls) a base image: it is not a step the cache can serve or miss.
    """

    def __init__(self) -> None:
        self.steps: dict[str, str] = {}
        self._cached: set[str] = set()

    def feed(self, line: str) -> None:
        if (match := _STEP.match(line)) and not match.group(3).startswith("FROM "):
            self.steps.setdefault(match.group(1), f"{match.group(2)} {_step_name(match.group(3))}")
        elif match := _CACHED_STEP.match(line):
            self._cached.add(match.group(1))

    @property
    def cached_steps(self) -> set[str]:
        return self._cached & set(self.steps)

    @property
    def ran_steps(self) -> tuple[str, ...]:
        return tuple(name for step, name in sorted(self.steps.items(), key=lambda kv: int(kv[0]))
                     if step not in self._cached)


@dataclass(frozen=True)
class BuildSpec:
    """One ``docker build``: everything it needs, already decided by the caller."""

    context: Path
    dockerfile: str
    tags: tuple[str, ...]
    target: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    cache_from: tuple[str, ...] = ()
    no_cache: bool = False
    inline_cache: bool = True
    # id → file on the worker; reaches RUN --mount=type=secret only, never a layer
    secrets: Mapping[str, str] = field(default_factory=dict)
    pull: bool = False
    # ``os/arch`` to build for (``--platform``); None: the engine's own. Another architecture's RUN steps
    # run under QEMU user emulation (binfmt_misc), as ``docker buildx build --platform`` does.
    platform: str | None = None


@dataclass(frozen=True)
class BuildReport:
    image_id: str
    tags: tuple[str, ...]
    duration: float
    steps: int
    cached_steps: int
    size: int
    # "[stage n/m] instruction" of every step that ran (was not served from the cache)
    ran_steps: tuple[str, ...] = ()

    @property
    def cache_ratio(self) -> float:
        return self.cached_steps / self.steps if self.steps else 0.0

    def to_dict(self) -> dict:
        return {
            "image_id": self.image_id,
            "tags": list(self.tags),
            "duration_s": round(self.duration, 1),
            "steps": self.steps,
            "cached_steps": self.cached_steps,
            "size": self.size,
            "ran_steps": list(self.ran_steps),
        }


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# The probe: a real BuildKit build, tiny. FROM scratch with one file, exported to a directory, so it
# needs no image, pulls nothing and leaves nothing on the engine.
_PROBE_DOCKERFILE = "FROM scratch\nCOPY probe.txt /probe.txt\n"
_PROBE_TIMEOUT = 120


def buildkit_env(config_dir: str | None = None) -> dict[str, str]:
    """The environment every BuildKit build of a CLI runs with (the probe's and :meth:`Engine.build`'s)."""
    env = dict(os.environ)
    env["DOCKER_BUILDKIT"] = "1"
    env.pop("BUILDX_BUILDER", None)  # a builder chosen elsewhere (a dead container, say) is not ours
    if config_dir:
        env["DOCKER_CONFIG"] = config_dir
    return env


@dataclass(frozen=True)
class BuildKitProbe:
    """What one docker CLI did with the probe build."""

    cli: str
    runs_buildkit: bool
    buildx: bool  # ``docker buildx`` answers: the buildx setting may be true with this CLI
    output: str  # the build's own output (why it failed, when it did)

    @property
    def reason(self) -> str:
        """The last line the CLI printed: what names the failure in an error message."""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else "no output"


def _probe(cli: str, run: Callable[..., subprocess.CompletedProcess]) -> BuildKitProbe:
    with tempfile.TemporaryDirectory(prefix="image-factory-buildkit-probe-") as tmp:
        context, out = Path(tmp, "ctx"), Path(tmp, "out")
        context.mkdir()
        (context / "probe.txt").write_text("probe\n")
        (context / "Dockerfile").write_text(_PROBE_DOCKERFILE)
        try:
            result = run(
                [cli, "build", "-q", "-o", f"type=local,dest={out}", str(context)], capture_output=True,
                text=True, errors="replace", timeout=_PROBE_TIMEOUT, env=buildkit_env(), check=False,
            )
            output = (result.stdout or "") + (result.stderr or "")
            # Exit 0 is not enough: only BuildKit exports to a directory, so the file proves it ran the build.
            works = result.returncode == 0 and (out / "probe.txt").is_file()
            if result.returncode == 0 and not works:
                output += "\nthe build exited 0 but exported nothing (not a BuildKit build)"
        except subprocess.TimeoutExpired:
            works, output = False, f"the probe build did not finish within {_PROBE_TIMEOUT} s"
        except OSError as exc:
            works, output = False, str(exc)
    try:
        buildx = run([cli, "buildx", "version"], capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        buildx = False
    return BuildKitProbe(cli=cli, runs_buildkit=works, buildx=buildx, output=output.strip())


_probes: dict[str, BuildKitProbe] = {}
_probes_lock = threading.Lock()


def probe_buildkit(cli: str, *, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> BuildKitProbe:
    """Can ``cli`` run BuildKit builds? Asked with a real build, because its version does not tell: a 23+
    CLI needs the buildx plugin (which may be there and broken), Debian's 20.10 drives the engine's own.

    Cached per process and per binary (``/bin/docker`` is ``/usr/bin/docker`` on merged-/usr systems).
    """
    key = os.path.realpath(shutil.which(cli) or cli)
    with _probes_lock:  # held while probing: two threads asking at once run one build
        if key not in _probes:
            _probes[key] = _probe(cli, run)
        return _probes[key]


def docker_clis() -> list[str]:
    """Every docker binary on PATH, in PATH order, then /usr/bin's (Debian's), each binary once."""
    candidates: list[str] = []
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        path = os.path.join(directory or ".", "docker")
        if os.access(path, os.X_OK) and os.path.realpath(path) not in map(os.path.realpath, candidates):
            candidates.append(path)
    return candidates


def find_buildkit_cli(preferred: str = "") -> str:
    """The docker CLI to build with: the configured one (trusted as it is), else the first on PATH that
    passes the probe (:func:`probe_buildkit`)."""
    if preferred:
        if not shutil.which(preferred):
            raise EngineError(f"docker_cli setting points at {preferred!r}, which is not an executable")
        return preferred
    candidates = docker_clis()
    failures: list[str] = []
    for cli in candidates:
        probe = probe_buildkit(cli)
        if probe.runs_buildkit:
            return cli
        failures.append(f"{cli}: {probe.reason}")
    raise EngineError(
        "no docker CLI here can run BuildKit builds: install the buildx plugin, or a docker CLI older "
        f"than 23 (Debian's docker.io), or set the docker_cli setting (tried: {'; '.join(failures) or 'none'})"
    )


class Engine:
    """A Docker engine: BuildKit builds through the CLI, the rest through the Docker SDK."""

    def __init__(self, *, cli: str = "", buildx: bool = False, docker_host: str | None = None, client=None):
        """``client``: a ``docker.DockerClient`` the caller connected (the tasks' EngineHook: DockerHook's)."""
        import docker  # imported here: DAG files import this module at parse time

        self.cli = find_buildkit_cli(cli)
        self.buildx = buildx
        self._config_dir: str | None = None
        if client is not None:
            self.client = client
            return
        try:
            self.client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
            self.client.ping()
        except Exception as exc:
            raise EngineError(f"the Docker engine does not answer ({exc}); is dockerd running?") from exc

    # ---- credentials ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def logged_in(self, logins: Mapping[str, tuple[str, str]]) -> Iterator[None]:
        """A throw-away DOCKER_CONFIG for the CLI (BuildKit reads --cache-from auth from it)."""
        with tempfile.TemporaryDirectory(prefix="image-factory-docker-") as config_dir:
            for registry, (username, password) in logins.items():
                result = subprocess.run(
                    [self.cli, "--config", config_dir, "login", "--username", username, "--password-stdin", registry],
                    input=password, capture_output=True, text=True, check=False, timeout=120,
                )
                if result.returncode != 0:
                    raise EngineError(f"docker login to {registry} as {username} failed: {result.stderr.strip()}")
            self._config_dir = config_dir
            try:
                yield
            finally:
                self._config_dir = None

    def _cli_env(self) -> dict[str, str]:
        return buildkit_env(self._config_dir)

    # ---- build ---------------------------------------------------------------------------------

    def build_command(self, spec: BuildSpec, iidfile: str) -> list[str]:
        cmd = [self.cli, "buildx", "build", "--load"] if self.buildx else [self.cli, "build"]
        cmd += ["--progress=plain", "--file", str(spec.context / spec.dockerfile), "--iidfile", iidfile]
        if spec.target:
            cmd += ["--target", spec.target]
        if spec.platform:
            cmd += ["--platform", spec.platform]
        for tag in spec.tags:
            cmd += ["--tag", tag]
        for key, value in sorted(spec.build_args.items()):
            cmd += ["--build-arg", f"{key}={value}"]
        if spec.inline_cache:
            cmd += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        for key, value in sorted(spec.labels.items()):
            cmd += ["--label", f"{key}={value}"]
        for ref in spec.cache_from:
            cmd += ["--cache-from", f"type=registry,ref={ref}" if self.buildx else ref]
        if spec.no_cache:
            cmd.append("--no-cache")
        if spec.pull:
            cmd.append("--pull")
        for secret_id, path in sorted(spec.secrets.items()):
            cmd += ["--secret", f"id={secret_id},src={path}"]
        cmd.append(str(spec.context))
        return cmd

    def build(self, spec: BuildSpec, *, on_line: Callable[[str], None] | None = None) -> BuildReport:
        """Build and stream BuildKit's plain progress to ``on_line`` as it happens."""
        emit = on_line or log.info
        with tempfile.TemporaryDirectory(prefix="image-factory-build-") as tmp:
            iidfile = os.path.join(tmp, "iid")
            cmd = self.build_command(spec, iidfile)
            started = time.monotonic()
            progress = BuildProgress()
            tail: list[str] = []
            with subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self._cli_env(),
                errors="replace",
            ) as process:
                assert process.stdout is not None
                try:
                    for raw in process.stdout:
                        line = raw.rstrip("\n")
                        emit(line)
                        tail = [*tail[-_MAX_TAIL_LINES:], line]
                        progress.feed(line)
                except BaseException:
                    # The task's execution timeout (or a kill) lands here: stop the CLI, which ends its
                    # BuildKit session, instead of waiting in Popen's exit for a build nobody reads.
                    process.kill()
                    raise
                returncode = process.wait()
            duration = time.monotonic() - started
            if returncode != 0:
                raise BuildFailed(
                    f"docker build of {', '.join(spec.tags) or spec.dockerfile} (target {spec.target or 'last'}) "
                    f"exited {returncode}; last lines:\n" + "\n".join(tail[-25:])
                )
            image_id = Path(iidfile).read_text().strip()
        size = self.client.images.get(image_id).attrs.get("Size", 0)
        return BuildReport(
            image_id=image_id, tags=spec.tags, duration=duration, steps=len(progress.steps),
            cached_steps=len(progress.cached_steps), size=size, ran_steps=progress.ran_steps,
        )

    # ---- registry traffic ----------------------------------------------------------------------

    def push(
        self, ref: str, *, auth: tuple[str, str] | None = None, retries: int = 5, backoff: float = 2.0,
        on_line: Callable[[str], None] | None = None,
    ) -> str:
        """Push ``name:tag`` with retries; returns the registry's manifest digest."""
        emit = on_line or log.info
        name, tag = name_and_tag(ref)
        auth_config = {"username": auth[0], "password": auth[1]} if auth else None
        last_error = ""
        for attempt in range(1, retries + 1):
            digest = None
            error = None
            try:
                for event in self.client.api.push(name, tag=tag, stream=True, decode=True, auth_config=auth_config):
                    if "error" in event:
                        error = event.get("error")
                    elif aux := event.get("aux"):
                        digest = aux.get("Digest")
                    elif event.get("status") and not event.get("progressDetail"):
                        # progress-bar events are skipped: one line per layer state is enough in a log
                        emit(f"push {ref}: {event.get('id', '')} {event['status']}".replace(":  ", ": "))
            except Exception as exc:  # connection dropped mid-push: the next try resumes what is missing
                error = str(exc)
            if digest and not error:
                return digest
            last_error = error or "the engine reported no digest"
            if attempt < retries:
                wait = backoff * 2 ** (attempt - 1)
                emit(f"push {ref} failed (try {attempt}/{retries}): {last_error}; again in {wait:.0f}s")
                time.sleep(wait)
        raise EngineError(f"push of {ref} failed after {retries} tries: {last_error}")

    def pull(self, ref: str, *, auth: tuple[str, str] | None = None) -> str:
        auth_config = {"username": auth[0], "password": auth[1]} if auth else None
        name, tag = name_and_tag(ref) if "@" not in ref else (ref, None)
        try:
            image = self.client.images.pull(name, tag=tag, auth_config=auth_config)
        except Exception as exc:
            raise EngineError(f"pull of {ref} failed: {exc}") from exc
        return image.id

    def import_tarball(self, tarball: Path, ref: str, *, changes: Sequence[str] = ()) -> str:
        """``docker import``: a root filesystem tarball as the image ``ref``, with Dockerfile ``changes``
        (ENV, LABEL, CMD ...) applied; returns the image id. The file is streamed, never read into memory."""
        name, tag = name_and_tag(ref)
        try:
            reply = self.client.api.import_image_from_file(str(tarball), repository=name, tag=tag,
                                                           changes=list(changes))
        except Exception as exc:
            raise EngineError(f"docker import of {tarball} as {ref} failed: {exc}") from exc
        # The reply is the engine's progress stream: JSON objects, the last one has the id or the error.
        for line in str(reply).splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and (error := event.get("error") or event.get("errorDetail")):
                    raise EngineError(f"docker import of {tarball} as {ref} failed: {error}")
        try:
            return self.client.images.get(ref).id
        except Exception as exc:
            raise EngineError(f"docker import of {tarball} left no image {ref}: {exc}") from exc

    def tag(self, image: str, ref: str) -> None:
        name, tag = name_and_tag(ref)
        if not self.client.images.get(image).tag(name, tag):
            raise EngineError(f"could not tag {image} as {ref}")

    @functools.cached_property
    def platform(self) -> str:
        """The engine's own ``os/arch`` (``linux/amd64``): any other platform's containers run emulated."""
        info = self.client.info()
        arch = info.get("Architecture", "")
        return f"{info.get('OSType') or 'linux'}/{_GO_ARCH.get(arch, arch)}"

    def has_image(self, ref: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return True

    def inspect(self, ref: str) -> dict:
        import docker.errors

        try:
            return self.client.images.get(ref).attrs
        except docker.errors.ImageNotFound as exc:
            raise EngineError(f"image {ref} is not on the engine") from exc

    def remove(self, ref: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.ImageNotFound):
            self.client.images.remove(ref, force=True, noprune=False)

    def repo_digests(self, ref: str) -> list[str] | None:
        """``RepoDigests`` of the image ``ref`` names (``name@digest`` per push or pull); ``None`` if absent."""
        import docker.errors

        try:
            return list(self.client.images.get(ref).attrs.get("RepoDigests") or [])
        except docker.errors.ImageNotFound:
            return None

    def untag(self, ref: str) -> str | None:
        """Remove the tag ``ref`` (the image goes with its last tag); ``None`` when done, else why not.

        Never forced: an image a container still uses stays, and so do the layers other images share.
        """
        import docker.errors

        try:
            self.client.images.remove(ref, force=False, noprune=False)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            return str(exc.explanation or exc)
        return None

    def prune_build_cache(self, keep_bytes: int) -> int:
        """Trim BuildKit's cache to ``keep_bytes`` (least recently used first); returns bytes reclaimed.

        Records an active build uses are never pruned, so this is safe while other builds run.
        """
        result = self.client.api.prune_builds(keep_storage=keep_bytes, all=True)
        return int((result or {}).get("SpaceReclaimed") or 0)

    # ---- run -----------------------------------------------------------------------------------

    def run(
        self, image: str, command: Sequence[str] | None = None, *, entrypoint: Sequence[str] | None = None,
        user: str | None = None, environment: Mapping[str, str] | None = None, timeout: float = 600,
        on_line: Callable[[str], None] | None = None, network: str | None = None, name: str | None = None,
    ) -> RunResult:
        """Run a command inside ``image`` to its end, streaming its output; the container is removed.

        ``timeout`` is wall-clock, whether the command prints or not: past it the container is removed
        (killed first) and :class:`EngineError` says so. The output is read in a thread, so waiting for
        the next line never outlasts the deadline. ``name`` (default ``image-factory-run-<random>``)
        names the container, so it can be found while it runs.
        """
        emit = on_line or log.info
        name = name or f"image-factory-run-{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        deadline = started + timeout
        container = self.client.containers.run(
            image, command=list(command) if command is not None else None,
            entrypoint=list(entrypoint) if entrypoint is not None else None, user=user,
            environment=dict(environment or {}), detach=True, network=network, name=name,
        )
        lines: list[str] = []
        try:
            chunks: queue.Queue[bytes | None] = queue.Queue()
            threading.Thread(target=_pump_logs, args=(container, chunks), name=f"logs-{name}", daemon=True).start()
            partial = ""
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EngineError(
                        f"{' '.join(command or [])} in {image} ran longer than {timeout:g}s (container {name} "
                        "removed)"
                    )
                try:
                    chunk = chunks.get(timeout=min(remaining, 1.0))
                except queue.Empty:
                    continue
                if chunk is None:
                    break
                *complete, partial = (partial + chunk.decode(errors="replace")).split("\n")
                for line in complete:
                    emit(line.rstrip("\r"))
                    lines.append(line.rstrip("\r"))
            if partial:
                emit(partial)
                lines.append(partial)
            # The log stream ends when the container stops: its exit code is there, or nearly.
            status = container.wait(timeout=max(1.0, deadline - time.monotonic()))
            code = int(status.get("StatusCode", 1))
        except EngineError:
            raise
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"{' '.join(command or [])} in {image} ran longer than {timeout:g}s (container {name} removed)"
                ) from None
            raise EngineError(f"{' '.join(command or [])} in {image}: {exc}") from exc
        finally:
            # Removing (forced) also kills it: on success, on the deadline, and on the task's own timeout.
            with contextlib.suppress(Exception):
                container.remove(force=True)
        return RunResult(code, "\n".join(lines))

    def start(self, image: str, command: Sequence[str] | None = None, **kwargs):
        """A detached container the caller stops (health checks of long-running commands)."""
        return self.client.containers.run(image, command=list(command) if command else None, detach=True, **kwargs)


# The kernel's machine names (``docker info``'s Architecture) as OCI / Go name architectures.
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def _pump_logs(container, chunks: queue.Queue) -> None:
    """Follow a container's output into ``chunks``; ``None`` marks the end (the container stopped, or went)."""
    try:
        for chunk in container.logs(stream=True, follow=True):
            chunks.put(chunk)
    except Exception as exc:  # the container was removed under the stream: that is its end too
        log.debug("log stream of %s ended: %s", getattr(container, "name", "a container"), exc)
    finally:
        chunks.put(None)


def labels_of(attrs: Mapping) -> dict[str, str]:
    return dict((attrs.get("Config") or {}).get("Labels") or {})
