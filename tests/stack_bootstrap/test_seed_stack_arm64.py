"""The stack's arm64 part (include/stack/seed_stack.py): QEMU emulation set up or one message saying why not,
the arm64 base under its side tag, the mirror's plain tag made an OCI image index over both platforms (on a
real docker-registry, with the images pushed as the engine pushes them: Docker v2 manifests), and the
platforms the env file records. `make stack` runs the engine half for real."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_image_factory.clients.engine import BuildKitProbe, RunResult
from airflow_image_factory.clients.registry import DOCKER_MANIFEST_V2, OCI_INDEX, platform_of
from airflow_image_factory.clients.settings_loader import load_settings
from tests.support.oci_images import push_image
from tests.support.registry_servers import RegistryServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include" / "stack"))
import seed_stack

# Brings the plain_registry fixture: a real docker-registry of its own, no stack needed.
pytest_plugins = ["tests.support.registry_fixtures"]
pytestmark = pytest.mark.timeout(120)

SETTINGS = load_settings(env={})
PROBE = BuildKitProbe(cli="/usr/bin/docker", runs_buildkit=True, buildx=False, output="")
ENABLED = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c46\n"


def config(tmp_path: Path, **env: str) -> seed_stack.StackConfig:
    return seed_stack.StackConfig.from_env({"STACK_DIR": str(tmp_path / "stack"), **env}, SETTINGS)


# --- settings and names ---------------------------------------------------------------------------


def test_arm64_pythons_are_checked_like_the_others(tmp_path):
    with pytest.raises(seed_stack.StackError, match=r"Python 3.9 is not supported .* fix ARM64_PYTHON_VERSIONS"):
        seed_stack.check_config(config(tmp_path, ARM64_PYTHON_VERSIONS="3.9"), SETTINGS)
    with pytest.raises(seed_stack.StackError, match=r"arm64 base of Python 3.12 cannot be built offline"):
        seed_stack.check_config(config(tmp_path, PYTHON_VERSIONS="3.11 3.12", ARM64_PYTHON_VERSIONS="3.12"),
                                SETTINGS)
    # Outside PYTHON_VERSIONS it is simply not made (∩), whatever it is
    seed_stack.check_config(config(tmp_path, PYTHON_VERSIONS="3.11", ARM64_PYTHON_VERSIONS="3.11 3.12"), SETTINGS)


def test_the_arm64_base_has_a_side_tag_and_its_own_rootfs(tmp_path):
    cfg = config(tmp_path)
    base = seed_stack.bases_of(cfg, SETTINGS)[0]
    arm64 = base.of("arm64")
    assert (base.tag, base.platform) == ("3.11-slim-bookworm", "linux/amd64")
    assert (arm64.tag, arm64.index_tag, arm64.platform) == ("3.11-slim-bookworm-arm64", "3.11-slim-bookworm",
                                                             "linux/arm64")
    assert arm64.image == "localhost:5000/library/python:3.11-slim-bookworm-arm64"
    assert seed_stack.tarball_of(cfg, arm64).name == "3.11-slim-bookworm-arm64.tar"
    assert seed_stack.tarball_of(cfg, base).name == "3.11-slim-bookworm.tar"  # amd64's as always


def test_the_arm64_image_is_its_rootfs_from_scratch_with_what_the_amd64_import_adds(tmp_path):
    arm64 = seed_stack.bases_of(config(tmp_path), SETTINGS)[0].of("arm64")
    lines = seed_stack.rootfs_dockerfile("3.11.2", arm64).splitlines()
    assert lines[:2] == ["FROM scratch", "ADD 3.11-slim-bookworm-arm64.tar /"]
    assert lines[2:] == seed_stack.import_changes("3.11.2", arm64)
    assert any("Offline stand-in for python:3.11-slim-bookworm," in line for line in lines)


# --- emulation ------------------------------------------------------------------------------------


def binfmt(tmp_path: Path, entry: str | None = None, *, mounted: bool = True) -> Path:
    directory = tmp_path / "binfmt_misc"
    directory.mkdir()
    if mounted:
        (directory / "register").write_text("")
    if entry is not None:
        (directory / "qemu-aarch64").write_text(entry)
    return directory


class Runner:
    """subprocess.run's stand-in: records commands, answers from ``answers`` (argv[0] name → code, stderr)."""

    def __init__(self, answers=None, on_enable=None):
        self.answers, self.on_enable, self.commands = answers or {}, on_enable, []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        code, stderr = self.answers.get(Path(command[0]).name, (0, ""))
        if code == 0 and command[1:] == ["--enable", "qemu-aarch64"] and self.on_enable:
            self.on_enable()
        return subprocess.CompletedProcess(command, code, "", stderr)


def which(program: str) -> str:
    return f"/usr/sbin/{program}"


def test_emulation_is_seen_from_the_handlers_state(tmp_path):
    assert seed_stack.emulation_problem(binfmt(tmp_path, ENABLED)) is None
    assert "no qemu-aarch64 handler is registered" in seed_stack.emulation_problem(tmp_path / "nowhere")
    disabled = tmp_path / "off"
    disabled.mkdir()
    (disabled / "qemu-aarch64").write_text(ENABLED.replace("enabled", "disabled", 1))
    assert "is disabled" in seed_stack.emulation_problem(disabled)
    no_f = tmp_path / "no-f"
    no_f.mkdir()
    (no_f / "qemu-aarch64").write_text(ENABLED.replace("flags: PF", "flags: P"))
    assert seed_stack.emulation_problem(no_f) == ("the qemu-aarch64 handler has no F flag (flags: P), so containers "
                                                  "cannot find its interpreter")


def test_a_registered_handler_needs_nothing_done_not_even_root(tmp_path):
    run = Runner()
    assert seed_stack.ensure_emulation(binfmt(tmp_path, ENABLED), run=run, euid=1000, which=which) is None
    assert run.commands == []  # a second `make stack` costs a file read


def test_emulation_is_set_up_mounting_binfmt_misc_first(tmp_path):
    directory = binfmt(tmp_path, mounted=False)
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\tproc\nnodev\tbinfmt_misc\n")

    def registered():
        (directory / "qemu-aarch64").write_text(ENABLED)

    run = Runner(on_enable=registered)
    assert seed_stack.ensure_emulation(directory, run=run, euid=0, machine="x86_64", which=which,
                                       filesystems=filesystems) is None
    assert run.commands == [["mount", "-t", "binfmt_misc", "binfmt_misc", str(directory)],
                            ["/usr/sbin/update-binfmts", "--enable", "qemu-aarch64"]]


def test_each_reason_emulation_cannot_be_had_is_said(tmp_path):
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\tbinfmt_misc\n")
    unmounted = binfmt(tmp_path, mounted=False)

    def why(**kwargs):
        options = {"run": Runner(), "euid": 0, "machine": "x86_64", "which": which, "filesystems": filesystems,
                   **kwargs}
        return seed_stack.ensure_emulation(unmounted, **options)

    assert why(euid=1000) == "not root, so qemu-aarch64 cannot be registered with binfmt_misc"
    assert why(machine="aarch64") == "this host is aarch64, and the stack emulates arm64 on x86_64 hosts only"
    assert why(which=lambda program: None) == ("qemu-user-static and binfmt-support not installed (apt-get install "
                                               "qemu-user-static binfmt-support)")
    no_binfmt = tmp_path / "no-binfmt"
    no_binfmt.write_text("nodev\tproc\n")
    assert why(filesystems=no_binfmt) == "the kernel has no binfmt_misc"
    refused = Runner({"mount": (32, "mount: /proc/sys/fs/binfmt_misc: permission denied.\n")})
    assert why(run=refused) == (f"mount -t binfmt_misc binfmt_misc {unmounted} failed: mount: "
                                "/proc/sys/fs/binfmt_misc: permission denied.")
    assert len(refused.commands) == 1  # nothing after a refused mount
    # update-binfmts succeeded but registered nothing (say, a kernel that refuses the F flag)
    assert why(run=Runner()) == f"no qemu-aarch64 handler is registered in {unmounted}"


def test_without_emulation_the_stack_says_so_once_and_lists_no_arm64_rootfs(tmp_path, monkeypatch, capsys):
    cfg = config(tmp_path, PYTHON_VERSIONS="3.11 3.13")
    cfg.run.mkdir(parents=True)
    fake_bases_run(monkeypatch, present={"3.11-slim-bookworm", "3.13-slim-trixie"})
    asked = []
    monkeypatch.setattr(seed_stack, "ensure_emulation", lambda: asked.append(1) or "not root, so qemu-aarch64 "
                        "cannot be registered with binfmt_misc")
    todo = tmp_path / "todo"
    seed_stack.cmd_bases(cfg, SETTINGS, todo)
    assert todo.read_text() == "" and asked == [1]
    messages = [line for line in capsys.readouterr().out.splitlines() if "arm64" in line]
    assert messages == ["[stack] arm64: emulation unavailable: not root, so qemu-aarch64 cannot be registered with "
                        "binfmt_misc; arm64 builds are unavailable, continuing amd64-only"]
    assert seed_stack.arm64_plan(cfg, SETTINGS, lambda: "no binfmt_misc") == ([], "no binfmt_misc")


def test_with_emulation_the_missing_arm64_rootfs_is_listed_and_none_asked_for_asks_nothing(tmp_path, monkeypatch):
    cfg = config(tmp_path, PYTHON_VERSIONS="3.11 3.13")
    cfg.run.mkdir(parents=True)
    fake_bases_run(monkeypatch, present={"3.11-slim-bookworm", "3.13-slim-trixie"})
    monkeypatch.setattr(seed_stack, "ensure_emulation", lambda: None)
    todo = tmp_path / "todo"
    seed_stack.cmd_bases(cfg, SETTINGS, todo)
    assert todo.read_text() == ("3.11 bookworm 3.11-slim-bookworm-arm64 "
                                "localhost:5000/library/python:3.11-slim-bookworm-arm64 arm64\n")

    def never():
        raise AssertionError("emulation is not set up when no arm64 base is wanted")

    assert seed_stack.arm64_plan(config(tmp_path, ARM64_PYTHON_VERSIONS=""), SETTINGS, never) == ([], None)
    assert seed_stack.arm64_plan(config(tmp_path, PYTHON_VERSIONS="3.13"), SETTINGS, never) == ([], None)


def fake_bases_run(monkeypatch, *, present):
    """cmd_bases without an engine: the probe, the engine and a mirror that has the tags ``present``."""

    class Mirror:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def manifest_digest(self, repository, reference):
            return "sha256:" + "0" * 64 if reference in present else None

        def get_manifest(self, repository, reference):
            from airflow_image_factory.exceptions import ManifestNotFound

            raise ManifestNotFound(reference, status=404)

    class Client:
        def version(self):
            return {"Version": "20.10.24"}

    monkeypatch.setattr(seed_stack, "choose_cli", lambda forced: PROBE)
    monkeypatch.setattr(seed_stack, "connect", lambda probe: type("E", (), {"client": Client()})())
    monkeypatch.setattr(seed_stack, "client_version", lambda cli: "20.10.24")
    monkeypatch.setattr(seed_stack, "mirror_client", lambda config: Mirror())


# --- the index, on a real registry ---------------------------------------------------------------

REPO = "library/python"


def push_engine_image(client, tag, architecture):
    """An image as `docker push` (20.10) leaves it: a Docker v2 manifest."""
    return push_image(client, REPO, tag, architecture=architecture, media_type=DOCKER_MANIFEST_V2)


def test_a_plain_amd64_tag_becomes_an_index_over_both_keeping_the_amd64_digest(plain_registry: RegistryServer):
    client = plain_registry.client()
    amd64 = push_engine_image(client, "plain-slim-bookworm", "amd64")
    arm64 = push_engine_image(client, "plain-slim-bookworm-arm64", "arm64")
    digest = seed_stack.put_platform_index(client, REPO, "plain-slim-bookworm", "plain-slim-bookworm-arm64")

    index = client.get_manifest(REPO, "plain-slim-bookworm")
    assert index.digest == digest and index.media_type == OCI_INDEX  # the registry took and serves it as such
    assert [(child["digest"], child["mediaType"], platform_of(child)) for child in index.children] == [
        (amd64.digest, DOCKER_MANIFEST_V2, "linux/amd64"), (arm64.digest, DOCKER_MANIFEST_V2, "linux/arm64")]
    assert client.get_manifest(REPO, amd64.digest).raw == amd64.manifest.raw  # untouched, by digest
    assert client.image_config(REPO, "plain-slim-bookworm", platform="linux/arm64")["architecture"] == "arm64"

    puts = client.stats.manifest_puts
    assert seed_stack.put_platform_index(client, REPO, "plain-slim-bookworm", "plain-slim-bookworm-arm64") == digest
    assert client.stats.manifest_puts == puts  # a complete index is kept: nothing put again


def test_an_index_without_arm64_gets_it_with_the_same_amd64_child(plain_registry: RegistryServer):
    client = plain_registry.client()
    amd64 = push_engine_image(client, None, "amd64")
    arm64 = push_engine_image(client, "only-amd64-arm64", "arm64")
    from airflow_image_factory.clients.registry import image_index

    client.put_manifest(REPO, "only-amd64", image_index([(amd64.manifest, "linux/amd64")]))
    seed_stack.put_platform_index(client, REPO, "only-amd64", "only-amd64-arm64")
    children = client.get_manifest(REPO, "only-amd64").children
    assert [(c["digest"], platform_of(c)) for c in children] == [(amd64.digest, "linux/amd64"),
                                                                 (arm64.digest, "linux/arm64")]


def test_an_arm64_tag_whose_config_says_amd64_is_never_indexed(plain_registry: RegistryServer):
    """What `docker import --platform linux/arm64` gives on Docker 20.10: an image recorded as amd64."""
    client = plain_registry.client()
    amd64 = push_engine_image(client, "wrong", "amd64")
    mislabelled = push_engine_image(client, "wrong-arm64", "amd64")
    with pytest.raises(seed_stack.StackError, match=rf"@{mislabelled.digest} is a linux/amd64 image, not linux/arm64"):
        seed_stack.put_platform_index(client, REPO, "wrong", "wrong-arm64")
    assert client.manifest_digest(REPO, "wrong") == amd64.digest


class ArmEngine:
    """The engine half of seed_arm64 (build, run under emulation, push), pushing through the registry API."""

    def __init__(self, client, machine="aarch64"):
        self.client, self.machine, self.done, self.architecture = client, machine, [], None

    def has_image(self, ref):
        return False

    def build(self, spec, *, on_line=None):
        self.done.append(("build", spec.platform, (spec.context / spec.dockerfile).read_text(),
                          sorted(p.name for p in spec.context.iterdir())))
        self.architecture = spec.platform.split("/")[1]

    def inspect(self, ref):
        return {"Architecture": self.architecture}

    def run(self, image, command, **kwargs):
        assert kwargs["network"] == "none"
        self.done.append(("run", image, command[-1].rsplit("; ", 1)[-1]))
        return RunResult(0, f"Python 3.11.2\npip 23.0.1\n{self.machine}")

    def push(self, ref, **kwargs):
        self.done.append(("push", ref))
        return push_engine_image(self.client, ref.rsplit(":", 1)[1], self.architecture).digest


def test_seeding_arm64_builds_checks_pushes_then_indexes_and_a_second_run_does_nothing(
        plain_registry: RegistryServer, tmp_path, monkeypatch, capsys):
    cfg = config(tmp_path, MIRROR=f"{plain_registry.host}/{REPO}", PYTHON_VERSIONS="3.11")
    cfg.rootfs.mkdir(parents=True)
    cfg.logs.mkdir(parents=True)
    client = plain_registry.client()
    monkeypatch.setattr(seed_stack, "mirror_client", lambda config: client)
    amd64 = push_engine_image(client, "3.11-slim-bookworm", "amd64")
    arm64 = seed_stack.bases_of(cfg, SETTINGS)[0].of("arm64")
    seed_stack.tarball_of(cfg, arm64).write_bytes(b"rootfs")
    seed_stack.tarball_version_of(cfg, arm64).write_text("3.11.2\n")
    engine = ArmEngine(client)

    seed_stack.seed_bases(cfg, SETTINGS, engine)  # the amd64 base is present: nothing to do
    assert engine.done == []
    seed_stack.seed_arm64_bases(cfg, engine, [arm64])  # `finish`, once up.sh built the arm64 rootfs
    side = f"{plain_registry.host}/{REPO}:3.11-slim-bookworm-arm64"
    (build, dockerfile, context), run, push = engine.done[0][1:], engine.done[1], engine.done[2]
    assert build == "linux/arm64" and dockerfile.startswith("FROM scratch\nADD 3.11-slim-bookworm-arm64.tar /\n")
    assert context == ["3.11-slim-bookworm-arm64.tar", "Dockerfile"]  # no other tarball sent as context
    assert run == ("run", side, "uname -m") and push == ("push", side)
    children = client.get_manifest(REPO, "3.11-slim-bookworm").children
    assert [platform_of(c) for c in children] == ["linux/amd64", "linux/arm64"]
    assert children[0]["digest"] == amd64.digest
    assert list(cfg.rootfs.iterdir()) == []  # in the mirror now: the tarball is not needed again
    assert "3.11-slim-bookworm is an index over linux/amd64 and linux/arm64" in capsys.readouterr().out

    engine.done.clear()
    seed_stack.seed_arm64_bases(cfg, engine, [arm64])
    assert engine.done == []


def test_an_arm64_base_that_does_not_run_as_aarch64_is_not_pushed(plain_registry: RegistryServer, tmp_path,
                                                                  monkeypatch):
    cfg = config(tmp_path, MIRROR=f"{plain_registry.host}/other/python", PYTHON_VERSIONS="3.11")
    cfg.rootfs.mkdir(parents=True)
    cfg.logs.mkdir(parents=True)
    client = plain_registry.client()
    monkeypatch.setattr(seed_stack, "mirror_client", lambda config: client)
    push_image(client, "other/python", "3.11-slim-bookworm", media_type=DOCKER_MANIFEST_V2)
    arm64 = seed_stack.bases_of(cfg, SETTINGS)[0].of("arm64")
    seed_stack.tarball_of(cfg, arm64).write_bytes(b"rootfs")
    seed_stack.tarball_version_of(cfg, arm64).write_text("3.11.2\n")
    engine = ArmEngine(client, machine="x86_64")
    with pytest.raises(seed_stack.StackError, match=r"does not run as aarch64"):
        seed_stack.seed_arm64_bases(cfg, engine, [arm64])
    assert [step[0] for step in engine.done] == ["build", "run"]
    assert seed_stack.tarball_of(cfg, arm64).is_file()  # kept for the next run


# --- what the stack can build for -------------------------------------------------------------------


def test_the_env_file_records_the_stacks_platforms(tmp_path):
    cfg = config(tmp_path)
    cfg.stack_dir.mkdir(parents=True)
    arm64 = [seed_stack.bases_of(cfg, SETTINGS)[0].of("arm64")]
    assert seed_stack.stack_platforms([]) == ("linux/amd64",)
    seed_stack.write_env_file(cfg, PROBE, seed_stack.stack_platforms(arm64))
    text = (cfg.stack_dir / "env").read_text()
    assert "export IMAGE_FACTORY_STACK_PLATFORMS='linux/amd64 linux/arm64'\n" in text
    sourced = subprocess.run(["bash", "-c", f"source {shlex.quote(str(cfg.stack_dir / 'env'))} && env -0"],
                             capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
    env = dict(item.split("=", 1) for item in sourced.split("\0") if "=" in item)
    assert env["IMAGE_FACTORY_STACK_PLATFORMS"].split() == ["linux/amd64", "linux/arm64"]
    load_settings(env=env)  # not a setting, and the settings still load with it


def test_the_summary_shows_the_platforms_and_why_arm64_is_missing(tmp_path, capsys, monkeypatch):
    cfg = config(tmp_path)

    class Registry:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def catalog(self):
            return ["library/python"]

        def list_tags(self, repository):
            return ["3.11-slim-bookworm"]

    monkeypatch.setattr(seed_stack, "RegistryClient", lambda *args, **kwargs: Registry())
    monkeypatch.setattr(seed_stack, "mirror_client", lambda config: Registry())
    engine = type("E", (), {"client": type("C", (), {"version": lambda self: {"Version": "20.10.24"}})()})()
    seed_stack.summary(cfg, SETTINGS, engine, PROBE, 0, ("linux/amd64",), "the kernel has no binfmt_misc")
    lines = capsys.readouterr().out.splitlines()
    assert "[stack]   platforms: linux/amd64 (arm64 unavailable: the kernel has no binfmt_misc)" in lines


def test_the_engines_copy_of_the_plain_tag_is_put_back_to_amd64(tmp_path, capsys):
    """`docker run --platform linux/arm64 <mirror>:3.11-slim-bookworm` leaves the arm64 child under that name."""
    base = seed_stack.bases_of(config(tmp_path), SETTINGS)[0]
    pulls = []

    class Images:
        def pull(self, name, tag, platform):
            pulls.append((name, tag, platform))
            engine.architecture = "amd64"

    class Engine:
        architecture = "arm64"
        client = type("Client", (), {"images": Images()})()

        def has_image(self, ref):
            return ref == base.image

        def inspect(self, ref):
            return {"Architecture": self.architecture}

    engine = Engine()
    seed_stack.keep_native_locally(engine, base)
    assert pulls == [("localhost:5000/library/python", "3.11-slim-bookworm", "linux/amd64")]
    assert "was the arm64 image; pulling the linux/amd64 one back" in capsys.readouterr().out
    seed_stack.keep_native_locally(engine, base)
    assert len(pulls) == 1  # amd64 already: nothing done
