"""engine.BuildProgress: the cache report read from BuildKit's plain progress (lines as 20.10 prints them);
the BuildKit probe that chooses the docker CLI (fakes of the CLI); Engine.run's wall-clock timeout on the
stack's engine."""

# ruff: noqa: E501 - BuildKit prints long lines; the sample keeps them as printed
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from airflow_image_factory.clients import engine as engine_module
from airflow_image_factory.clients.engine import BuildProgress, Engine
from airflow_image_factory.exceptions import EngineError

PROGRESS = """\
#4 [ui-build 1/5] FROM localhost:5000/library/python@sha256:629cc1d3
#4 CACHED
#9 [docker-context-files 1/1] COPY include/docker/docker-context-files.README.md docker-context-file[s] /
#9 CACHED
#12 [ui-build 2/5] RUN --mount=type=secret,id=extra_ca,required=false     --mount=type=cache,id=x,target=/root/.cache/pip bash /opt/image-scripts/compile_ui_assets.sh toolchain
#12 CACHED
#18 [airflow-distributions-sources 3/3] RUN --mount=type=bind,from=airflow-sources,target=/airflow-sources bash /opt/image-scripts/install_airflow.sh distributions /dist
#18 0.512 Building the wheel of task-sdk
#18 DONE 7.0s
#19 [main  4/11] RUN --mount=type=cache,id=airflow-pip-cache,target=/root/.cache/pip bash install_airflow.sh dependencies
#19 CACHED
"""


def progress() -> BuildProgress:
    report = BuildProgress()
    for line in PROGRESS.splitlines():
        report.feed(line)
    return report


def test_steps_served_by_the_cache_and_steps_that_ran():
    report = progress()
    assert len(report.steps) == 4  # the FROM is not a step
    assert report.cached_steps == {"9", "12", "19"}
    assert report.ran_steps == (
        "[airflow-distributions-sources 3/3] RUN bash /opt/image-scripts/install_airflow.sh distributions /dist",
    )


def test_a_step_name_keeps_the_stage_and_drops_the_mount_options():
    names = progress().steps.values()
    assert "[main  4/11] RUN bash install_airflow.sh dependencies" in names
    assert not [n for n in names if "--mount" in n]


# --- Engine.run on the stack's engine ---


@pytest.fixture(scope="module")
def engine(stack_env) -> Engine:
    return Engine(cli=os.environ.get("IMAGE_FACTORY_DOCKER_CLI", ""))


@pytest.fixture(scope="module")
def small_image() -> str:
    """The stack's mirror of the Python base: already on the engine (the stack seeds it)."""
    return os.environ.get("IMAGE_FACTORY_PYTHON_BASE_MIRROR", "localhost:5000/library/python") + ":3.11-slim-bookworm"


def _containers_named(name: str) -> list[str]:
    listing = subprocess.run(
        [os.environ.get("IMAGE_FACTORY_DOCKER_CLI") or "docker", "ps", "-a", "-q", "--filter", f"name=^/{name}$"],
        capture_output=True, text=True, check=True,
    )
    return listing.stdout.split()


@pytest.mark.stack
@pytest.mark.timeout(60)
def test_a_silent_command_is_stopped_at_the_timeout_and_its_container_is_gone(engine, small_image):
    name = f"image-factory-test-silent-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"sleep 30 in .* ran longer than 3s"):
        engine.run(small_image, ["sleep", "30"], timeout=3, name=name)
    assert time.monotonic() - started < 6
    assert _containers_named(name) == []


@pytest.mark.stack
@pytest.mark.timeout(60)
def test_a_chatty_command_is_stopped_at_the_timeout_too(engine, small_image):
    name = f"image-factory-test-chatty-{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(EngineError, match="ran longer than 3s"):
        engine.run(small_image, ["sh", "-c", "while true; do echo tick; sleep 0.2; done"], timeout=3, name=name,
                   on_line=lines.append)
    assert time.monotonic() - started < 6
    assert "tick" in lines and _containers_named(name) == []


@pytest.mark.stack
@pytest.mark.timeout(60)
def test_a_command_within_its_timeout_gives_its_output_and_exit_code(engine, small_image):
    name = f"image-factory-test-quick-{uuid.uuid4().hex[:8]}"
    result = engine.run(small_image, ["sh", "-c", "echo one; printf two; sleep 1; echo ' three'; exit 3"],
                        timeout=30, name=name)
    assert result.exit_code == 3
    assert result.output.splitlines() == ["one", "two three"]
    assert _containers_named(name) == []


# --- the BuildKit probe: a real tiny build decides, not the CLI's version ---


@pytest.fixture(autouse=True)
def fresh_probes():
    engine_module._probes.clear()
    yield
    engine_module._probes.clear()


class FakeDocker:
    """Stands in for subprocess.run on a docker CLI: ``exports`` is what a BuildKit build does with
    ``-o type=local,dest=...`` (writes the context's file there); a legacy or broken CLI does not."""

    def __init__(self, *, exit_code=0, exports=True, buildx=False, output="", raises=None):
        self.exit_code, self.exports, self.buildx, self.output, self.raises = exit_code, exports, buildx, output, raises
        self.builds: list[tuple[list[str], dict]] = []

    def __call__(self, cmd, **kwargs):
        if cmd[1:3] == ["buildx", "version"]:
            return subprocess.CompletedProcess(cmd, 0 if self.buildx else 1, "", "")
        self.builds.append((cmd, kwargs))
        if self.raises:
            raise self.raises
        if self.exports:
            dest = Path(cmd[cmd.index("-o") + 1].split("dest=", 1)[1])
            dest.mkdir(parents=True)
            (dest / "probe.txt").write_text((Path(cmd[-1]) / "probe.txt").read_text())
        return subprocess.CompletedProcess(cmd, self.exit_code, "", self.output)


def test_a_cli_whose_build_exports_the_file_runs_buildkit(monkeypatch):
    monkeypatch.setenv("BUILDX_BUILDER", "a-dead-builder")
    docker = FakeDocker(buildx=True)
    probe = engine_module.probe_buildkit("/usr/bin/docker", run=docker)
    assert probe.runs_buildkit and probe.buildx and probe.cli == "/usr/bin/docker"
    (cmd, kwargs), = docker.builds
    assert cmd[:4] == ["/usr/bin/docker", "build", "-q", "-o"] and cmd[4].startswith("type=local,dest=")
    # the same environment Engine.build gives the CLI
    assert kwargs["env"]["DOCKER_BUILDKIT"] == "1" and "BUILDX_BUILDER" not in kwargs["env"]
    assert kwargs["timeout"] > 0


def test_exit_zero_without_the_exported_file_is_not_a_buildkit_build():
    probe = engine_module.probe_buildkit("docker", run=FakeDocker(exports=False))
    assert not probe.runs_buildkit and "exported nothing" in probe.reason


def test_a_refusing_cli_says_why_in_its_last_line():
    refusal = "ERROR: BuildKit is enabled but the buildx component is missing or broken.\n       Install the buildx component"
    probe = engine_module.probe_buildkit("/usr/local/bin/docker", run=FakeDocker(exit_code=1, exports=False, output=refusal))
    assert not probe.runs_buildkit and not probe.buildx
    assert probe.reason == "Install the buildx component" and "buildx component is missing" in probe.output


@pytest.mark.parametrize(("error", "says"), [
    (subprocess.TimeoutExpired(["docker"], 120), "did not finish within 120 s"),
    (FileNotFoundError(2, "No such file or directory"), "No such file or directory"),
])
def test_a_hanging_or_missing_cli_fails_the_probe(error, says):
    probe = engine_module.probe_buildkit("/nowhere/docker", run=FakeDocker(raises=error))
    assert not probe.runs_buildkit and says in probe.output


def test_the_probe_runs_once_per_binary_and_process(tmp_path):
    binary = tmp_path / "docker"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (tmp_path / "alias").symlink_to(binary)
    docker = FakeDocker()
    first = engine_module.probe_buildkit(str(binary), run=docker)
    assert engine_module.probe_buildkit(str(binary), run=docker) is first
    assert engine_module.probe_buildkit(str(tmp_path / "alias"), run=docker) is first  # the same binary
    assert len(docker.builds) == 1


def _probe(cli, works, reason=""):
    return engine_module.BuildKitProbe(cli=cli, runs_buildkit=works, buildx=False, output=reason)


def test_find_buildkit_cli_takes_the_first_cli_that_passes_the_probe(monkeypatch):
    asked = []
    monkeypatch.setattr(engine_module, "docker_clis", lambda: ["/usr/local/bin/docker", "/usr/bin/docker", "/opt/docker"])

    def probe(cli):
        asked.append(cli)
        return _probe(cli, cli == "/usr/bin/docker", "ERROR: buildx component is missing")

    monkeypatch.setattr(engine_module, "probe_buildkit", probe)
    assert engine_module.find_buildkit_cli() == "/usr/bin/docker"
    assert asked == ["/usr/local/bin/docker", "/usr/bin/docker"]  # PATH order, stops at the first


def test_find_buildkit_cli_names_every_cli_it_tried_and_why(monkeypatch):
    monkeypatch.setattr(engine_module, "docker_clis", lambda: ["/a/docker", "/b/docker"])
    monkeypatch.setattr(engine_module, "probe_buildkit", lambda cli: _probe(cli, False, f"no buildkit in {cli}"))
    with pytest.raises(EngineError, match=r"tried: /a/docker: no buildkit in /a/docker; /b/docker: no buildkit in /b/docker"):
        engine_module.find_buildkit_cli()
    monkeypatch.setattr(engine_module, "docker_clis", list)
    with pytest.raises(EngineError, match=r"tried: none"):
        engine_module.find_buildkit_cli()


def test_a_configured_cli_is_trusted_without_a_probe(monkeypatch):
    monkeypatch.setattr(engine_module, "probe_buildkit", lambda cli: pytest.fail("a configured CLI is not probed"))
    assert engine_module.find_buildkit_cli("sh") == "sh"
    with pytest.raises(EngineError, match="docker_cli setting points at '/nowhere/docker'"):
        engine_module.find_buildkit_cli("/nowhere/docker")


def test_docker_clis_lists_each_binary_once_in_path_order(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "docker").write_text("#!/bin/sh\n")
        (folder / "docker").chmod(0o755)
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "docker").symlink_to(first / "docker")
    (tmp_path / "none").mkdir()
    monkeypatch.setenv("PATH", os.pathsep.join(str(tmp_path / d) for d in ("none", "second", "again", "first")))
    found = engine_module.docker_clis()
    assert found[:2] == [str(second / "docker"), str(tmp_path / "again" / "docker")]
    assert str(first / "docker") not in found  # the same binary as again/docker
    assert all(path == "/usr/bin/docker" for path in found[2:])  # Debian's, when there
