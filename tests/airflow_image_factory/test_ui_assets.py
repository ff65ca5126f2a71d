"""BuildImageOperator.ui_assets: where a PROD build of a branch takes the compiled UI from, orchestrated over
small fakes of the engine and the registry (the real ones run in tests/dags/test_build_images_stack.py)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.clients.sources import UI_SOURCE_DIRS
from airflow_image_factory.policy.request import validate_request
from airflow_image_factory.tasks.operators import UI_ASSETS_LABEL, UI_ASSETS_TARGET, BuildImageOperator

SHA = "a" * 40
DIGEST = "sha256:" + "d" * 64


@dataclass
class FakeEngine:
    local: dict[str, dict] = field(default_factory=dict)  # ref → inspect() attributes
    built: list = field(default_factory=list)
    pushed: list = field(default_factory=list)

    def has_image(self, ref: str) -> bool:
        return ref in self.local

    def inspect(self, ref: str) -> dict:
        return self.local[ref]

    def build(self, spec, *, on_line=None):
        self.built.append(spec)
        return type("Report", (), {"image_id": "sha256:ui", "duration": 1.0})()

    def push(self, ref: str, *, auth=None, on_line=None) -> str:
        self.pushed.append(ref)
        return DIGEST


@dataclass
class FakeRegistry:
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    asked: list = field(default_factory=list)
    # tags that appear after the first question: another build published them meanwhile
    later: dict[tuple[str, str], str] = field(default_factory=dict)
    credentials = None

    @contextlib.contextmanager
    def get_conn(self):
        yield self

    def manifest_digest(self, path: str, tag: str) -> str | None:
        self.asked.append((path, tag))
        answer = self.tags.get((path, tag))
        self.tags.update(self.later)
        return answer


@pytest.fixture
def settings(tmp_path: Path):
    """The file lock in a directory of the test's own (no Connection is looked up)."""
    return load_settings(env={"IMAGE_FACTORY_PROMOTION_LOCK": "file",
                              "IMAGE_FACTORY_PROMOTION_LOCK_DIR": str(tmp_path / "locks")})


@pytest.fixture
def context(tmp_path: Path) -> Path:
    root = tmp_path / "context"
    for relative in ("Dockerfile", "include/docker/scripts/compile_ui_assets.sh",
                     "include/docker/scripts/with_extra_ca.sh"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(relative)
    for directory in UI_SOURCE_DIRS:
        (root / "airflow-sources" / directory).mkdir(parents=True)
        (root / "airflow-sources" / directory / "package.json").write_text("{}")
    return root


def _operator(kind: str, **conf) -> BuildImageOperator:
    request = validate_request({"branch": "main", "python_versions": ["3.11"], "commit_sha": SHA, **conf},
                               load_settings(env={}))
    return BuildImageOperator(task_id=f"build_{kind}", kind=kind, build_request=request.to_dict(), python="3.11",
                              python_base={"pinned": "base@sha256:1", "upstream": "python", "digest": "sha256:1"})


def test_a_missing_ui_image_is_built_once_pushed_and_taken_by_digest(context, settings, tmp_path):
    engine, registry = FakeEngine(), FakeRegistry()
    args = _operator("prod-build").ui_assets(engine, context, {"A": "1"}, {}, registry, settings)
    [spec] = engine.built
    assert spec.target == UI_ASSETS_TARGET and spec.build_args == {"A": "1"} and len(spec.tags) == 1
    ref = spec.tags[0]
    assert ref.startswith("ghcr.io/apache/airflow/ui-assets:") and engine.pushed == [ref]
    assert args == {"UI_ASSETS_FROM": "image", "UI_ASSETS_IMAGE": f"ghcr.io/apache/airflow/ui-assets@{DIGEST}"}
    # the key is the tag it asked the registry about: before taking the lock, and again holding it
    assert registry.asked == [("apache/airflow/ui-assets", ref.rsplit(":", 1)[1])] * 2
    [lock_file] = (tmp_path / "locks").glob("*.lock")  # one lock, named for the key
    assert ref.rsplit(":", 1)[1][:40] in lock_file.name.replace("_", "")


def test_a_ui_image_published_while_waiting_for_the_lock_is_taken_not_compiled(context, settings):
    """Two Python versions of a run at once: the second asks, finds nothing, waits for the first's lock,
    and then finds what the first pushed."""
    probe = FakeRegistry()
    _operator("prod-build").ui_assets(FakeEngine(), context, {}, {}, probe, settings)
    key = probe.asked[0][1]
    engine = FakeEngine()
    registry = FakeRegistry(later={("apache/airflow/ui-assets", key): DIGEST})
    args = _operator("prod-build").ui_assets(engine, context, {}, {}, registry, settings)
    assert engine.built == [] and engine.pushed == []
    assert args == {"UI_ASSETS_FROM": "image", "UI_ASSETS_IMAGE": f"ghcr.io/apache/airflow/ui-assets@{DIGEST}"}


def test_a_present_ui_image_is_taken_without_building(context, settings):
    engine = FakeEngine()
    probe = FakeRegistry()
    _operator("prod-build").ui_assets(FakeEngine(), context, {}, {}, probe, settings)
    key = probe.asked[0][1]  # the content key of these UI sources
    registry = FakeRegistry(tags={("apache/airflow/ui-assets", key): DIGEST})
    args = _operator("prod-build").ui_assets(engine, context, {}, {}, registry, settings)
    assert engine.built == [] and engine.pushed == []
    assert args["UI_ASSETS_IMAGE"] == f"ghcr.io/apache/airflow/ui-assets@{DIGEST}"


def test_a_run_that_pushes_nothing_compiles_the_ui_in_its_build(context, settings):
    engine = FakeEngine()
    args = _operator("prod-build", push=False).ui_assets(engine, context, {}, {}, FakeRegistry(), settings)
    assert args == {"UI_ASSETS_FROM": "build"} and engine.built == [] and engine.pushed == []


def test_the_prod_build_takes_what_its_build_stage_took(context, settings):
    stage = "ghcr.io/apache/airflow/main/prod-build/python3.11:" + SHA
    taken = f"ghcr.io/apache/airflow/ui-assets@{DIGEST}"
    registry = FakeRegistry()
    engine = FakeEngine(local={stage: {"Config": {"Labels": {UI_ASSETS_LABEL: taken}}}})
    assert _operator("prod").ui_assets(engine, context, {}, {}, registry, settings) == {
        "UI_ASSETS_FROM": "image", "UI_ASSETS_IMAGE": taken}
    assert registry.asked == [] and engine.built == []
    compiled_in_stage = FakeEngine(local={stage: {"Config": {"Labels": {UI_ASSETS_LABEL: "scratch"}}}})
    assert _operator("prod").ui_assets(compiled_in_stage, context, {}, {}, registry, settings) == {
        "UI_ASSETS_FROM": "build"}
