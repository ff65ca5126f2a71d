#!/usr/bin/env python3
"""The Python half of `make stack`: what is seeded once the host has an engine and a registry.

include/stack/up.sh installs the Debian packages, starts dockerd and the registry, debootstraps what
cannot be pulled, and runs this with the repository's .venv python, so the stack is made with the
package's own settings, BuildKit probe, engine and registry client:

    seed_stack.py check   the settings up.sh was given (before anything is installed)
    seed_stack.py bases   the docker CLI (the package's BuildKit probe, once); which python:X.Y-slim-<debian>
                          the mirror lacks: pulled from upstream when it can be, else listed in --todo for
                          up.sh to debootstrap into a rootfs tarball
    seed_stack.py seed    those bases into the mirror (the pulled image tagged, or the tarball imported;
                          sanity check, push, confirm), the source repository and its constraints branches,
                          the Airflow home, the env file, the postgres image; meanwhile up.sh's arm64
                          rootfs builds go on under emulation
    seed_stack.py finish  the arm64 bases (once their rootfs are built), the env file with the stack's
                          platforms; then the summary

arm64 (ARM64_PYTHON_VERSIONS): `bases` registers QEMU's arm64 handler with binfmt_misc (or says once why it
cannot, and the stack goes on amd64-only) and lists an arm64 rootfs for up.sh to debootstrap; `finish` builds it
FROM scratch for linux/arm64, checks it under emulation, pushes it as <tag>-arm64 and turns the mirror's
<tag> into an OCI image index over the amd64 image and it, as Docker Hub's python images are.

Settings: the environment up.sh documents, with its defaults: STACK_DIR, REGISTRY_PORT, PYTHON_VERSIONS,
ARM64_PYTHON_VERSIONS, UPSTREAM, MIRROR, PULL_TIMEOUT, AIRFLOW_BIN, EXTRA_CA_BUNDLE, DOCKER_CLI, DOCKER_HOST.
Idempotent like up.sh: what the mirror, the repository or the Airflow home already has is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_constraints
import seed_sources

from airflow_image_factory.clients.engine import BuildKitProbe, BuildSpec, Engine, find_buildkit_cli, probe_buildkit
from airflow_image_factory.clients.registry import RegistryClient, image_index, platform_of
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.clients.signing import generate_key_pair
from airflow_image_factory.exceptions import EngineError, ImageFactoryError, ManifestNotFound
from airflow_image_factory.policy.settings import ENV_PREFIX, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
# The Pythons that their base's Debian release (the package's debian_for_python) ships as its python3:
# only those bases can be built offline (debootstrap); 3.10 and 3.12 need the upstream image.
OFFLINE_PYTHONS = ("3.11", "3.13")
# Runs without network: a base must work with nothing but itself.
SANITY_SCRIPT = ('python --version; python -m venv /tmp/v; /tmp/v/bin/python -c "import ssl, sqlite3, ensurepip"; '
                 "pip --version")
TAIL_LINES = 20
# The engine's own platform (the stack is made on amd64 hosts) and the one QEMU emulates.
NATIVE, EMULATED = "linux/amd64", "linux/arm64"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_HANDLER = "qemu-aarch64"  # binfmt-support's name for QEMU's arm64 entry


class StackError(Exception):
    """A step failed; ``log`` (a file) or ``output`` (text) is shown before the message."""

    def __init__(self, message: str, *, log: Path | None = None, output: str = "", what: str = "its output"):
        super().__init__(message)
        self.log = log
        self.output = output
        self.what = what  # names ``output`` on screen


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class StackConfig:
    """up.sh's settings, read from the same environment variables with the same defaults."""

    stack_dir: Path
    registry_port: str
    python_versions: tuple[str, ...]
    upstream: str
    mirror: str
    pull_timeout: float
    airflow_bin: Path
    extra_ca_bundle: str
    docker_cli: str  # empty: the probe chooses
    docker_host: str
    # Pythons that also get an arm64 base (∩ python_versions); empty: no emulation, no arm64 bases
    arm64_python_versions: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str], settings: Settings) -> StackConfig:
        stack_dir = Path(env.get("STACK_DIR") or REPO_ROOT / ".stack")
        port = env.get("REGISTRY_PORT") or "5000"
        extra_ca = env.get("EXTRA_CA_BUNDLE", "")
        if not extra_ca and Path("/etc/ssl/certs/ca-certificates.crt").is_file():
            extra_ca = "/etc/ssl/certs/ca-certificates.crt"
        try:
            pull_timeout = float(env.get("PULL_TIMEOUT") or 20)
        except ValueError:
            raise StackError(f"PULL_TIMEOUT={env['PULL_TIMEOUT']!r} is not a number of seconds") from None
        return cls(
            stack_dir=stack_dir, registry_port=port,
            python_versions=tuple((env.get("PYTHON_VERSIONS") or "3.11 3.13").split()),
            upstream=env.get("UPSTREAM") or settings.python_base_upstream,
            mirror=env.get("MIRROR") or f"localhost:{port}/library/python", pull_timeout=pull_timeout,
            airflow_bin=Path(env.get("AIRFLOW_BIN") or REPO_ROOT / ".venv" / "bin" / "airflow"),
            extra_ca_bundle=extra_ca, docker_cli=env.get("DOCKER_CLI", ""), docker_host=env.get("DOCKER_HOST", ""),
            # get, not or: set and empty means no arm64 at all
            arm64_python_versions=tuple(env.get("ARM64_PYTHON_VERSIONS", "3.11").split()),
        )

    @property
    def registry(self) -> str:
        return f"localhost:{self.registry_port}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.registry_port}"

    @property
    def mirror_host(self) -> str:
        return self.mirror.split("/", 1)[0]

    @property
    def mirror_path(self) -> str:
        return self.mirror.split("/", 1)[1] if "/" in self.mirror else ""

    logs = property(lambda self: self.stack_dir / "logs")
    run = property(lambda self: self.stack_dir / "run")
    rootfs = property(lambda self: self.stack_dir / "rootfs")
    airflow_home = property(lambda self: self.stack_dir / "airflow")
    source_repo = property(lambda self: self.stack_dir / "source.git")
    # The probe's answer, from `bases` to `seed` of one up.sh run (seed reads it once, then it is gone).
    probe_file = property(lambda self: self.run / "buildkit-cli.json")


def check_config(config: StackConfig, settings: Settings) -> None:
    """Every stack Python must be one the package supports (and so has a Debian release for)."""
    known = " ".join(sorted(settings.supported_python_versions, key=version_key))
    if not config.python_versions:
        raise StackError(f"PYTHON_VERSIONS is empty; name one or more of: {known}")
    for python in config.python_versions:
        if python not in settings.supported_python_versions:
            raise StackError(f"Python {python} is not supported (known: {known}); fix PYTHON_VERSIONS")
    if not config.mirror_path:
        raise StackError(f"MIRROR={config.mirror} names no repository (host/path, e.g. localhost:5000/library/python)")
    for python in config.arm64_python_versions:
        if python not in settings.supported_python_versions:
            raise StackError(f"Python {python} is not supported (known: {known}); fix ARM64_PYTHON_VERSIONS")
        # arm64 bases are only ever built offline: pulling one would retag the engine's amd64 copy
        if python in config.python_versions and python not in OFFLINE_PYTHONS:
            raise StackError(f"an arm64 base of Python {python} cannot be built offline (only of: "
                             f"{' '.join(OFFLINE_PYTHONS)}); drop {python} from ARM64_PYTHON_VERSIONS")


# ------------------------------------------------------------------------------------------ bases
@dataclass(frozen=True)
class Base:
    """One python:X.Y-slim-<debian> of the stack: where it comes from, where it goes. An arm64 one is
    pushed under a side tag (``<tag>-arm64``); the plain tag becomes the index over both."""

    python: str
    debian: str
    mirror: str
    upstream: str
    arch: str = "amd64"

    @property
    def index_tag(self) -> str:
        return f"{self.python}-slim-{self.debian}"

    @property
    def tag(self) -> str:
        return self.index_tag if self.platform == NATIVE else f"{self.index_tag}-{self.arch}"

    @property
    def platform(self) -> str:
        return f"linux/{self.arch}"

    def of(self, arch: str) -> Base:
        return dataclasses.replace(self, arch=arch)

    @property
    def image(self) -> str:
        return f"{self.mirror}:{self.tag}"

    @property
    def upstream_ref(self) -> str:
        return f"{self.upstream}:{self.tag}"


def bases_of(config: StackConfig, settings: Settings) -> list[Base]:
    return [Base(py, settings.debian_for(py), config.mirror, config.upstream) for py in config.python_versions]


def tarball_name(base: Base) -> str:
    return f"{base.tag}.tar"


def tarball_of(config: StackConfig, base: Base) -> Path:
    """The rootfs up.sh debootstrapped for ``base`` (complete once it has this name) ..."""
    return config.rootfs / tarball_name(base)


def tarball_version_of(config: StackConfig, base: Base) -> Path:
    """... and the Python version it found in it (written before the tarball got its name)."""
    return config.rootfs / f"{base.tag}.python-version"


def offline_build_refusal(base: Base, upstream: str, settings: Settings) -> str | None:
    """Why ``base`` cannot be built offline (its Debian ships another python3), or None when it can."""
    if base.python in OFFLINE_PYTHONS:
        return None
    shipped = next((py for py in OFFLINE_PYTHONS if settings.debian_for(py) == base.debian), "?")
    return (f"python:{base.tag} cannot be built offline: Debian {base.debian} ships Python {shipped}, not "
            f"{base.python} (offline builds exist for: {' '.join(OFFLINE_PYTHONS)}). Make {upstream} reachable, "
            f"or drop {base.python} from PYTHON_VERSIONS.")


def where_from(*, in_mirror: bool, tarball: bool, upstream_on_engine: bool) -> str | None:
    """How `seed` gets a base into the mirror: ``present`` (nothing to do), ``import`` (up.sh's rootfs
    tarball), ``tag`` (the upstream image `bases` pulled); None: neither was made."""
    if in_mirror:
        return "present"
    if tarball:  # made for this very base, when the pull failed; preferred to an older pulled copy
        return "import"
    if upstream_on_engine:
        return "tag"
    return None


def import_changes(python_full: str, base: Base) -> list[str]:
    """What `docker import` adds to the debootstrapped rootfs so it behaves like the official image."""
    return [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        f"ENV PYTHON_VERSION={python_full}",
        f"LABEL org.opencontainers.image.version={python_full}",
        f'LABEL org.opencontainers.image.description="Offline stand-in for python:{base.index_tag}, built by '
        f'include/stack/up.sh with debootstrap"',
        'CMD ["python3"]',
    ]


def rootfs_dockerfile(python_full: str, base: Base) -> str:
    """The arm64 base's Dockerfile: `docker import --platform` records amd64 on 20.10 whatever it is told,
    so the rootfs is ADDed FROM scratch by a `docker build --platform`, with what the import adds."""
    return "\n".join(["FROM scratch", f"ADD {tarball_name(base)} /", *import_changes(python_full, base)]) + "\n"


# ------------------------------------------------------------------------------------------ arm64 emulation
def emulation_problem(binfmt: Path = BINFMT_DIR) -> str | None:
    """Why arm64 binaries cannot run in containers here, or None when QEMU's handler is registered, enabled
    and has the F flag (the kernel opens the interpreter at registration, so a container's root filesystem
    needs no qemu binary of its own)."""
    try:
        lines = (binfmt / QEMU_HANDLER).read_text().splitlines()
    except OSError:
        return f"no {QEMU_HANDLER} handler is registered in {binfmt}"
    if not lines or lines[0].strip() != "enabled":
        return f"the {QEMU_HANDLER} handler in {binfmt} is disabled"
    flags = next((line.partition(":")[2].strip() for line in lines if line.startswith("flags:")), "")
    if "F" not in flags:
        return (f"the {QEMU_HANDLER} handler has no F flag (flags: {flags or 'none'}), so containers cannot find "
                "its interpreter")
    return None


def which_admin(program: str) -> str | None:
    """``program`` on PATH or in the sbin directories a non-login shell may lack (update-binfmts is there)."""
    return shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin",
                                                       "/sbin"]))


def ensure_emulation(binfmt: Path = BINFMT_DIR, *, run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                     euid: int | None = None, machine: str | None = None,
                     which: Callable[[str], str | None] = which_admin,
                     filesystems: Path = Path("/proc/filesystems")) -> str | None:
    """Register QEMU's arm64 handler with binfmt_misc unless it is already; None when arm64 binaries run,
    else what failed. Never raises: the stack goes on amd64-only without it."""
    if emulation_problem(binfmt) is None:  # a second `make stack`, or set up by the host: nothing to do
        return None
    machine = machine or platform.machine()
    if machine not in ("x86_64", "amd64"):
        return f"this host is {machine}, and the stack emulates arm64 on x86_64 hosts only"
    if (os.geteuid() if euid is None else euid) != 0:
        return f"not root, so {QEMU_HANDLER} cannot be registered with binfmt_misc"
    missing = [package for package, program in (("qemu-user-static", "qemu-aarch64-static"),
                                                ("binfmt-support", "update-binfmts")) if not which(program)]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install {' '.join(missing)})"
    steps = []
    if not (binfmt / "register").exists():  # binfmt_misc is a filesystem of its own, often not mounted
        try:
            has_binfmt = "binfmt_misc" in filesystems.read_text()
        except OSError:
            has_binfmt = False
        if not has_binfmt:
            return "the kernel has no binfmt_misc"
        steps.append(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
    # binfmt-support's qemu-aarch64 entry has fix_binary yes: the F flag
    steps.append([which("update-binfmts") or "update-binfmts", "--enable", QEMU_HANDLER])
    for command in steps:
        try:
            done = run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{' '.join(command)} failed: {exc}"
        if done.returncode != 0:
            why = (done.stderr or done.stdout or "").strip().splitlines()
            return f"{' '.join(command)} failed: {why[-1] if why else f'exit {done.returncode}'}"
    return emulation_problem(binfmt)


def emulation_unavailable(why: str) -> str:
    """The one line `make stack` prints when arm64 cannot be had."""
    return f"arm64: emulation unavailable: {why}; arm64 builds are unavailable, continuing amd64-only"


def arm64_plan(config: StackConfig, settings: Settings,
               emulation: Callable[[], str | None]) -> tuple[list[Base], str | None]:
    """The arm64 bases to seed and, when there are none though some were asked for, why. ``emulation``
    is asked only when an arm64 base is wanted (ARM64_PYTHON_VERSIONS ∩ PYTHON_VERSIONS)."""
    wanted = [base.of("arm64") for base in bases_of(config, settings)
              if base.python in config.arm64_python_versions]
    if not wanted:
        return [], None
    why = emulation()
    return ([], why) if why else (wanted, None)


def stack_platforms(arm64: list[Base]) -> tuple[str, ...]:
    """What the stack's images can be built for: arm64 only with emulation and its bases in the mirror."""
    return (NATIVE, EMULATED) if arm64 else (NATIVE,)


# ------------------------------------------------------------------------------------------ the probe
def choose_cli(forced: str) -> BuildKitProbe:
    """The docker CLI of the stack: DOCKER_CLI if it passes the probe, else the package's own choice."""
    if forced:
        probe = probe_buildkit(forced)
        if not probe.runs_buildkit:
            raise StackError(f"DOCKER_CLI={forced} cannot run a BuildKit build", output=probe.output,
                             what="the probe build's output")
        return probe
    try:
        return probe_buildkit(find_buildkit_cli())  # cached: the probe that chose it
    except EngineError as exc:
        raise StackError(str(exc)) from None


def save_probe(path: Path, probe: BuildKitProbe) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(probe)))


def load_probe(path: Path) -> BuildKitProbe | None:
    """The probe `bases` made in this up.sh run, taken once (a later run probes again)."""
    try:
        probe = BuildKitProbe(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    finally:
        path.unlink(missing_ok=True)
    return probe if probe.runs_buildkit else None


def client_version(cli: str) -> str:
    result = subprocess.run([cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True,
                            timeout=20, check=False)
    return result.stdout.strip() or "?"


def connect(probe: BuildKitProbe) -> Engine:
    try:
        return Engine(cli=probe.cli, buildx=probe.buildx)  # DOCKER_HOST: docker.from_env reads it
    except EngineError as exc:
        raise StackError(str(exc)) from None


def mirror_client(config: StackConfig) -> RegistryClient:
    return RegistryClient(config.mirror_host, retries=2, timeout=10)


def in_mirror(registry: RegistryClient, config: StackConfig, base: Base) -> bool:
    try:
        return registry.manifest_digest(config.mirror_path, base.tag) is not None
    except ImageFactoryError as exc:
        raise StackError(f"cannot ask {config.mirror_host} for {base.image}: {exc}") from None


# ------------------------------------------------------------------------------------------ commands
def cmd_bases(config: StackConfig, settings: Settings, todo: Path) -> None:
    """Probe the CLI; pull what the mirror lacks, or list it in ``todo`` (``python debian tag image`` lines)."""
    probe = choose_cli(config.docker_cli)
    engine = connect(probe)
    engine_version = engine.client.version().get("Version", "?")
    say(f"docker CLI: {probe.cli} ({client_version(probe.cli).split('.')[0]}.x client, "
        f"buildx={str(probe.buildx).lower()}), engine {engine_version}")

    lines: list[str] = []
    with mirror_client(config) as registry:
        for base in bases_of(config, settings):
            if in_mirror(registry, config, base):
                say(f"python base: {base.image} present")
                continue
            if tarball_of(config, base).is_file():
                say(f"python base: {base.image} missing; using the rootfs an earlier run built "
                    f"({tarball_of(config, base)})")
                continue
            say(f"python base: {base.image} missing; trying {base.upstream_ref} (timeout {config.pull_timeout:g}s)")
            if pull(probe.cli, base.upstream_ref, config.pull_timeout, config.logs / "pull.log"):
                continue
            say(f"  {base.upstream_ref} cannot be pulled (see {config.logs / 'pull.log'})")
            if engine.has_image(base.upstream_ref):
                say(f"  using the {base.upstream_ref} already on the engine")
                continue
            if refusal := offline_build_refusal(base, config.upstream, settings):
                raise StackError(refusal)
            lines.append(f"{base.python} {base.debian} {base.tag} {base.image} {base.arch}")
        arm64, why = arm64_plan(config, settings, ensure_emulation)
        if why:
            say(emulation_unavailable(why))
        for base in arm64:
            if has_platforms(registry, config, base):
                say(f"python base: {base.mirror}:{base.index_tag} present for {NATIVE} and {EMULATED}")
            elif in_mirror(registry, config, base):
                say(f"python base: {base.image} present; {base.index_tag} becomes the index over both platforms")
            elif tarball_of(config, base).is_file():
                say(f"python base: {base.image} missing; using the arm64 rootfs an earlier run built")
            else:
                say(f"python base: {base.image} missing; built offline for {EMULATED} (under emulation: minutes)")
                lines.append(f"{base.python} {base.debian} {base.tag} {base.image} {base.arch}")
    todo.write_text("".join(f"{line}\n" for line in lines))
    save_probe(config.probe_file, probe)  # only once all went well: `seed` must not take a failed run's


def pull(cli: str, ref: str, timeout: float, log: Path) -> bool:
    """`docker pull` bounded in wall-clock time: offline, a pull can hang far longer than it takes to fail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        try:
            return subprocess.run([cli, "pull", ref], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            out.write(f"docker pull {ref}: no answer within {timeout:g} s\n")
            return False


def seed_bases(config: StackConfig, settings: Settings, engine: Engine) -> None:
    """Each (native) base into the mirror."""
    with mirror_client(config) as registry:
        for base in bases_of(config, settings):
            tarball = tarball_of(config, base)
            how = where_from(in_mirror=in_mirror(registry, config, base), tarball=tarball.is_file(),
                             upstream_on_engine=engine.has_image(base.upstream_ref))
            if how == "present":
                continue
            if how is None:
                raise StackError(f"{base.image} is missing, and {base.upstream_ref} was neither pulled nor built "
                                 "offline; run include/stack/up.sh (it debootstraps what cannot be pulled)")
            try:
                if how == "import":
                    python_full = tarball_version_of(config, base).read_text().strip()
                    engine.import_tarball(tarball, base.image, changes=import_changes(python_full, base))
                else:
                    engine.tag(base.upstream_ref, base.image)
            except (OSError, EngineError) as exc:
                raise StackError(f"cannot make {base.image}: {exc}") from None
            sanity_check(engine, base.image)
            push(engine, base.image, config.logs / "push.log")
            if not in_mirror(registry, config, base):
                raise StackError(f"{base.image} was pushed but {config.mirror_host} does not list it")
            say(f"  pushed {base.image}")
            if how == "import":  # in the mirror now; a later run needs it no more
                tarball.unlink(missing_ok=True)
                tarball_version_of(config, base).unlink(missing_ok=True)


def seed_arm64_bases(config: StackConfig, engine: Engine, arm64: list[Base]) -> None:
    """Each of ``arm64`` under its side tag and the plain tag an index (after ``seed_bases``)."""
    with mirror_client(config) as registry:
        for base in arm64:
            seed_arm64(config, registry, engine, base)
            keep_native_locally(engine, base.of("amd64"))


def has_platforms(registry: RegistryClient, config: StackConfig, base: Base) -> bool:
    """Whether the mirror's plain tag of ``base`` is already an index with both platforms."""
    try:
        current = registry.get_manifest(config.mirror_path, base.index_tag)
    except ManifestNotFound:
        return False
    return {NATIVE, EMULATED} <= {platform_of(child) for child in current.children}


def seed_arm64(config: StackConfig, registry: RegistryClient, engine: Engine, base: Base) -> None:
    """The arm64 base (built FROM the rootfs up.sh made, checked under emulation, pushed under its side tag),
    then the plain tag an index over the amd64 image and it. A complete index is kept."""
    if has_platforms(registry, config, base):
        return
    started = time.monotonic()
    tarball = tarball_of(config, base)
    built = not in_mirror(registry, config, base)
    if built:
        if not tarball.is_file():
            raise StackError(f"{base.image} is missing and no arm64 rootfs was built for it; run include/stack/up.sh")
        build_rootfs_image(config, engine, base)
        sanity_check(engine, base.image, machine="aarch64")
        push(engine, base.image, config.logs / "push.log")
        if not in_mirror(registry, config, base):
            raise StackError(f"{base.image} was pushed but {config.mirror_host} does not list it")
        say(f"  pushed {base.image}")
        tarball.unlink(missing_ok=True)
        tarball_version_of(config, base).unlink(missing_ok=True)
    digest = put_platform_index(registry, config.mirror_path, base.index_tag, base.tag)
    say(f"  {base.mirror}:{base.index_tag} is an index over {NATIVE} and {EMULATED} ({digest})"
        + (f"; arm64 part {time.monotonic() - started:.0f} s" if built else ""))


def keep_native_locally(engine: Engine, base: Base) -> None:
    """The engine's own copy of the plain tag stays the amd64 image. `docker run --platform linux/arm64` of
    the tag pulls the index's arm64 child under that same local name; everything that then runs the tag
    without --platform would get arm64 under emulation, many times slower. A pull of the amd64 child puts
    it back (its layers are still there)."""
    if not engine.has_image(base.image) or engine.inspect(base.image).get("Architecture") == base.arch:
        return
    name, _, tag = base.image.rpartition(":")
    say(f"  {base.image} on the engine was the {engine.inspect(base.image).get('Architecture')} image; "
        f"pulling the {base.platform} one back")
    try:
        engine.client.images.pull(name, tag=tag, platform=base.platform)
    except Exception as exc:  # the SDK's own errors; the stack can go on, the line above says what is off
        say(f"  could not pull {base.image} for {base.platform}: {exc}")


def build_rootfs_image(config: StackConfig, engine: Engine, base: Base) -> None:
    """`docker build --platform` of FROM scratch + the rootfs tarball, through the package's engine."""
    python_full = tarball_version_of(config, base).read_text().strip()
    log = config.logs / f"build-base-{base.tag}.log"
    say(f"  building {base.image} for {base.platform} FROM scratch + {tarball_of(config, base).name} (log: {log})")
    # The context holds only this rootfs (a hard link, same filesystem), not every tarball beside it.
    with tempfile.TemporaryDirectory(dir=config.rootfs, prefix=f"context-{base.tag}.") as tmp, \
            log.open("w") as out:
        context = Path(tmp)
        try:
            os.link(tarball_of(config, base), context / tarball_name(base))
        except OSError:
            shutil.copyfile(tarball_of(config, base), context / tarball_name(base))
        (context / "Dockerfile").write_text(rootfs_dockerfile(python_full, base))
        spec = BuildSpec(context=context, dockerfile="Dockerfile", tags=(base.image,), inline_cache=False,
                         platform=base.platform)
        try:
            engine.build(spec, on_line=lambda line: print(line, file=out, flush=True))
        except EngineError as exc:
            print(exc, file=out, flush=True)
            raise StackError(f"cannot build {base.image}", log=log) from None
    architecture = engine.inspect(base.image).get("Architecture")
    if architecture != base.arch:
        raise StackError(f"{base.image} was built for {architecture}, not {base.arch}")


def put_platform_index(registry: RegistryClient, repository: str, tag: str, arm64_tag: str) -> str:
    """Make ``tag`` an OCI image index over its amd64 image (the plain manifest there, or an index's amd64
    child: its digest is kept) and the arm64 image at ``arm64_tag``; one manifest PUT, no blob moves.
    Returns the index digest; an index that has both already is left as it is."""
    current = registry.get_manifest(repository, tag)
    if current.is_index:
        if {NATIVE, EMULATED} <= {platform_of(child) for child in current.children}:
            return current.digest
        native = next((child for child in current.children if platform_of(child) == NATIVE), None)
        if native is None:
            raise StackError(f"{registry.registry}/{repository}:{tag} is an index without a {NATIVE} image")
        current = registry.get_manifest(repository, native["digest"])
    emulated = registry.get_manifest(repository, arm64_tag)
    # What each config says, before the index says it for them (docker import records amd64 on 20.10
    # whatever it is told; a wrong arm64 image would be run by every arm64 build).
    for manifest, wanted in ((current, NATIVE), (emulated, EMULATED)):
        config = registry.config_of(repository, manifest)
        found = f"{config.get('os')}/{config.get('architecture')}"
        if found != wanted:
            raise StackError(f"{registry.registry}/{repository}@{manifest.digest} is a {found} image, not {wanted}")
    index = image_index([(current, NATIVE), (emulated, EMULATED)])
    registry.put_manifest(repository, tag, index)
    if (stored := registry.manifest_digest(repository, tag)) != index.digest:
        raise StackError(f"{registry.registry}/{repository}:{tag} is {stored} after the index {index.digest} was put")
    return index.digest


def sanity_check(engine: Engine, image: str, *, machine: str | None = None) -> None:
    """SANITY_SCRIPT in ``image``; with ``machine`` also that its binaries run as that machine (an arm64 base
    runs under QEMU: a local image of one platform runs as that platform)."""
    script = SANITY_SCRIPT + ("; uname -m" if machine else "")
    try:
        result = engine.run(image, ["sh", "-ec", script], network="none", timeout=300,
                            on_line=lambda line: say(f"  {line}"))
    except EngineError as exc:
        raise StackError(f"{image} does not pass the sanity check: {exc}") from None
    if not result.ok:
        raise StackError(f"{image} does not pass the sanity check (python --version, python -m venv)")
    if machine and result.output.strip().splitlines()[-1:] != [machine]:
        raise StackError(f"{image} does not run as {machine} (uname -m: {result.output.strip().splitlines()[-1:]})")


def push(engine: Engine, image: str, log: Path) -> None:
    with log.open("a") as out:
        def line(text: str) -> None:
            out.write(text + "\n")
            if " failed (try " in text:  # a retry is news on screen too, as each attempt was before
                say(text)

        try:
            engine.push(image, retries=3, on_line=line)
        except EngineError as exc:
            out.write(f"{exc}\n")
            out.flush()
            raise StackError(f"cannot push {image}", log=log) from None


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Everything printed inside (this process and what it runs) goes to ``log``; a failure too, with its
    traceback, and comes out as a :class:`StackError` naming the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    failed = False
    # Line-buffered, and sys.stdout/err too (they need not be fds 1 and 2): the lines keep their order.
    with log.open("w", buffering=1) as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        except (Exception, SystemExit):
            traceback.print_exc()
            failed = True
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    if failed:
        raise StackError(f"see {log}", log=log)


def report(log: Path, prefixes: tuple[str, ...], label: str) -> None:
    """The lines of ``log`` that say what a step did, on screen."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(prefixes):
            say(f"{label}: {line}")


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def seed_source_repo(config: StackConfig) -> None:
    """A faithful Airflow source tree made from a pinned release's sdists (seed_sources.py says how); a
    repository that has it is kept. The sdists are downloaded once, into $STACK_DIR/cache/sdists."""
    log = config.logs / "seed-sources.log"
    release = seed_sources.Release(seed_sources.AIRFLOW_VERSION, seed_sources.TASK_SDK_VERSION)
    try:
        with output_to(log):
            seed_sources.seed(config.source_repo, config.stack_dir / "cache" / "sdists", release, sys.executable)
    except StackError:
        raise StackError(f"could not seed the source repository {config.source_repo} (log: {log})", log=log) from None
    report(log, ("present:", "moved aside:", "created:"), "source repo")


def seed_constraint_branches(config: StackConfig) -> None:
    """Its constraints branches, as Airflow's own: resolved as PyPI stood at the release (seed_constraints.py
    says why: GitHub's are unreachable)."""
    log = config.logs / "seed-constraints.log"
    release = seed_sources.Release(seed_sources.AIRFLOW_VERSION, seed_sources.TASK_SDK_VERSION)
    try:
        # seed() reads the package's settings: the stack's CA bundle reaches uv through them.
        with output_to(log), environment(**{f"{ENV_PREFIX}EXTRA_CA_BUNDLE": config.extra_ca_bundle}), \
                tempfile.TemporaryDirectory(prefix="seed-constraints-") as tmp:
            for line in seed_constraints.seed(str(config.source_repo), ["main", release.release_branch],
                                              list(config.python_versions), as_of=seed_sources.RELEASE_UPLOADED,
                                              cache_dir=Path(tmp)):
                print(line, flush=True)
    except StackError:
        raise StackError(f"could not seed the constraints branches of {config.source_repo} (log: {log})",
                         log=log) from None
    report(log, ("present:", "created:"), "constraints")


# ------------------------------------------------------------------------------------------ Airflow home
def airflow_env(config: StackConfig) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(config.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def migration_stamp(airflow_bin: Path) -> str:
    """What the database was migrated for: the installed Airflow (its dist-info name has the version), else
    the binary and its mtime. The same text up.sh wrote, so its markers stay valid."""
    venv = airflow_bin.parent.parent
    names = sorted(p.name for p in venv.glob("lib/python3*/site-packages/apache_airflow-*.dist-info"))
    return names[0] if names else f"{airflow_bin} {int(airflow_bin.stat().st_mtime)}"


def needs_migration(home: Path, stamp: str) -> bool:
    marker = home / ".stack-migrated"
    return not ((home / "airflow.db").is_file() and marker.is_file() and marker.read_text().rstrip("\n") == stamp)


def seed_airflow_home(config: StackConfig, settings: Settings) -> None:
    home, airflow = config.airflow_home, config.airflow_bin
    home.mkdir(parents=True, exist_ok=True)
    if not (airflow.is_file() and os.access(airflow, os.X_OK)):
        say(f"airflow: {airflow} not found; skipping db migrate (create the venv, then rerun)")
        return
    # Starting Airflow costs seconds: migrate only when the installed Airflow changed or the database is new.
    stamp = migration_stamp(airflow)
    if not needs_migration(home, stamp):
        say(f"airflow: {home} already migrated ({stamp})")
        return
    log = config.logs / "airflow.log"
    say(f"airflow: migrating the SQLite database in {home} (log: {log})")
    env = {**os.environ, **airflow_env(config)}
    pool, slots = settings.build_pool, settings.build_pool_slots
    for args, what in (
        (["db", "migrate"], "airflow db migrate"),
        (["pools", "set", pool, str(slots), "concurrent image builds on one engine"], f"airflow pools set {pool}"),
    ):
        with log.open("a") as out:
            code = subprocess.run([str(airflow), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, check=False).returncode
        if code != 0:
            raise StackError(f"{what} failed", log=log)
    (home / ".stack-migrated").write_text(stamp + "\n")
    say(f"airflow: migrated; pool {pool} has {slots} slots")


# ------------------------------------------------------------------------------------------ env file
def setting_env(name: str, value: object) -> tuple[str, str]:
    """``IMAGE_FACTORY_<NAME>`` of a package setting and its value as the settings loader reads it back."""
    kinds = {f.name: f.type for f in dataclasses.fields(Settings)}
    if name not in kinds:
        raise KeyError(f"{name} is not a setting of the package")
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = json.dumps(list(value), separators=(",", ":"))
    else:
        text = str(value)
    return ENV_PREFIX + name.upper(), text


SIGNING_KEY = "evidence-signing.pem"  # in the stack dir; the public half beside it as .pub.pem


def ensure_signing_key(stack_dir: Path) -> Path:
    """The stack's evidence signing key (PEM), made once and kept (mode 0600 from its first byte), so the
    images a stack has published keep verifying across `make stack` runs. Its public half is written
    beside it, for `image-factory verify --public-key`."""
    private_path = stack_dir / SIGNING_KEY
    if not private_path.is_file():
        private_pem, public_pem = generate_key_pair()
        tmp = private_path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(private_pem)
        tmp.replace(private_path)
        (stack_dir / SIGNING_KEY.replace(".pem", ".pub.pem")).write_text(public_pem)
        say(f"evidence: a new signing key in {private_path}")
    return private_path


# Not a setting of the package: what the stack can build for, read by the tests that need arm64 (they skip
# with the reason when it lacks linux/arm64).
PLATFORMS_VARIABLE = ENV_PREFIX + "STACK_PLATFORMS"


def env_values(config: StackConfig, probe: BuildKitProbe, platforms: tuple[str, ...] = (NATIVE,)) -> dict[str, str]:
    """The env file's variables, in its order. release_images: the first stack Python is the default one, and
    no constraints URL (GitHub is unreachable). The evidence signing key is the Connection the settings name.
    ``platforms``: what the stack can build for (``stack_platforms``)."""
    values = {"STACK_DIR": str(config.stack_dir), **airflow_env(config)}
    if config.docker_host:
        values["DOCKER_HOST"] = config.docker_host
    for name, value in (
        ("docker_cli", probe.cli),
        ("buildx", probe.buildx),
        ("registry", config.registry),
        ("python_base_mirror", config.mirror),
        ("source_repo", str(config.source_repo)),
        ("extra_ca_bundle", config.extra_ca_bundle),
        ("python_versions", config.python_versions),
        ("release_default_python", config.python_versions[0]),
        ("release_constraints_url", ""),
    ):
        key, text = setting_env(name, value)
        values[key] = text
    values[PLATFORMS_VARIABLE] = " ".join(platforms)
    key_file = config.stack_dir / SIGNING_KEY
    if key_file.is_file():  # the signing Connection (settings: signing_connection), in Airflow's JSON form
        connection = "AIRFLOW_CONN_" + load_settings(env={}).signing_connection.upper()
        values[connection] = json.dumps({"conn_type": "generic", "password": key_file.read_text()})
    return values


def shell_quote(value: str) -> str:
    """Always single quotes, as the env file always had them."""
    return "'" + value.replace("'", "'\\''") + "'"


def env_file_text(stack_dir: Path, values: Mapping[str, str]) -> str:
    lines = [f"# Written by include/stack/up.sh; source it: . {stack_dir}/env"]
    lines += [f"export {key}={shell_quote(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def write_env_file(config: StackConfig, probe: BuildKitProbe, platforms: tuple[str, ...] = (NATIVE,)) -> None:
    values = env_values(config, probe, platforms)
    try:  # what tests and DAGs will read from it must load: the same check the package makes
        load_settings(env={**os.environ, **values})
    except ImageFactoryError as exc:
        raise StackError(f"the env file's settings do not load: {exc}") from None
    tmp = config.stack_dir / "env.tmp"
    tmp.unlink(missing_ok=True)
    # 0600 from its first byte: it holds the stack's signing key (the Connection's password)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(env_file_text(config.stack_dir, values))
    tmp.replace(config.stack_dir / "env")


def postgres_image(config: StackConfig, probe: BuildKitProbe) -> None:
    """postgres for smoke deploys (bash: a Dockerfile and a start check); adds its setting to the env file."""
    env = {**os.environ, "STACK_DIR": str(config.stack_dir), "REGISTRY_PORT": config.registry_port,
           "DOCKER_CLI": probe.cli, "EXTRA_CA_BUNDLE": config.extra_ca_bundle}
    sys.stdout.flush()
    code = subprocess.run(["bash", str(REPO_ROOT / "include" / "stack" / "postgres-image.sh")], env=env,
                          stdin=subprocess.DEVNULL, check=False).returncode
    if code != 0:
        raise StackError(f"include/stack/postgres-image.sh failed (exit {code})")


def summary(config: StackConfig, settings: Settings, engine: Engine, probe: BuildKitProbe, started: float,
            platforms: tuple[str, ...] = (NATIVE,), arm64_problem: str | None = None) -> None:
    at = f" at {config.docker_host}" if config.docker_host else ""
    with RegistryClient(config.registry, retries=1, timeout=5) as local, mirror_client(config) as mirror:
        try:
            repos = len(local.catalog())
            tags = " ".join(mirror.list_tags(config.mirror_path)) or "none"
        except ImageFactoryError:
            repos, tags = "?", "?"
    wanted = " ".join(base.tag for base in bases_of(config, settings))
    say(f"ready in {int(time.time() - started)} s")
    say(f"  engine:    Docker {engine.client.version().get('Version', '?')}{at}; CLI {probe.cli} "
        f"(buildx={str(probe.buildx).lower()})")
    say(f"  registry:  {config.registry_url} ({repos} repositories; list: curl -s {config.registry_url}/v2/_catalog)")
    say(f"  python:    {config.mirror}: {tags} (wanted: {wanted})")
    why = f" (arm64 unavailable: {arm64_problem})" if arm64_problem else ""
    say(f"  platforms: {' '.join(platforms)}{why}")
    say(f"  sources:   {config.source_repo}")
    say(f"  airflow:   AIRFLOW_HOME={config.airflow_home}")
    say(f"  env file:  . {config.stack_dir}/env")


def chosen_engine(config: StackConfig) -> tuple[BuildKitProbe, Engine]:
    """The CLI `bases` chose (its saved probe) and the engine behind it."""
    probe = load_probe(config.probe_file) or choose_cli(config.docker_cli)
    return probe, connect(probe)


def cmd_seed(config: StackConfig, settings: Settings) -> None:
    """Everything but the arm64 bases: their rootfs take minutes under emulation, and up.sh builds them
    meanwhile (one core each, beside this mostly downloads and one core)."""
    probe, engine = chosen_engine(config)
    seed_bases(config, settings, engine)
    seed_source_repo(config)
    seed_constraint_branches(config)
    seed_airflow_home(config, settings)
    ensure_signing_key(config.stack_dir)
    write_env_file(config, probe)
    postgres_image(config, probe)


def cmd_finish(config: StackConfig, settings: Settings, started: float) -> None:
    probe, engine = chosen_engine(config)
    # `bases` set emulation up and said why not if it could not: here it is only looked at.
    arm64, why = arm64_plan(config, settings, emulation_problem)
    seed_arm64_bases(config, engine, arm64)
    platforms = stack_platforms(arm64)
    write_env_file(config, probe, platforms)
    postgres_image(config, probe)  # in the registry already (seconds): only its setting, into the new env file
    summary(config, settings, engine, probe, started, platforms, why)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="the settings up.sh was given")
    bases = sub.add_parser("bases", help="probe the docker CLI; pull the bases the mirror lacks, list the others")
    bases.add_argument("--todo", required=True, type=Path, help="where to list what up.sh must debootstrap")
    sub.add_parser("seed", help="everything else but the arm64 bases")
    finish = sub.add_parser("finish", help="the arm64 bases, the env file with the platforms, then the summary")
    finish.add_argument("--started", type=float, default=time.time(), help="when up.sh started (epoch seconds)")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so temp dirs go and nothing half-made stays (seed_sources relies on it).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        settings = load_settings()
        config = StackConfig.from_env(os.environ if env is None else env, settings)
        check_config(config, settings)  # every command; `check` does only this
        commands: dict[str, Callable[[], None]] = {
            "check": lambda: None,
            "bases": lambda: cmd_bases(config, settings, args.todo),
            "seed": lambda: cmd_seed(config, settings),
            "finish": lambda: cmd_finish(config, settings, args.started),
        }
        commands[args.command]()
    except StackError as exc:
        fail(exc)
        return 1
    except ImageFactoryError as exc:  # the package's own errors name what is wrong already
        fail(StackError(str(exc)))
        return 1
    return 0


def fail(exc: StackError) -> None:
    if exc.log is not None and exc.log.is_file():
        print(f"[stack] --- last lines of {exc.log} ---", file=sys.stderr)
        print("\n".join(exc.log.read_text(errors="replace").splitlines()[-TAIL_LINES:]), file=sys.stderr)
    elif exc.output:
        print(f"[stack] --- {exc.what} ---", file=sys.stderr)
        print("\n".join(exc.output.splitlines()[-TAIL_LINES:]), file=sys.stderr)
    print(f"[stack] ERROR: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
