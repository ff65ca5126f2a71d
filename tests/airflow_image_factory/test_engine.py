"""engine.BuildProgress: the cache report read from BuildKit's plain progress (lines as 20.10 prints them);
Engine.run's wall-clock timeout on the stack's engine."""

# ruff: noqa: E501 - BuildKit prints long lines; the sample keeps them as printed
import os
import subprocess
import time
import uuid

import pytest

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
