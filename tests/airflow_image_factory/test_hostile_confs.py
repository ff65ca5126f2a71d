"""Hostile confs, straight into each DAG's validate function (no stack, no Airflow run): every one is
refused with the domain error naming the field, in short messages, within a short time.

The table crosses what an attacker or a careless script sends — confs that are not objects, deep nesting,
huge strings and numbers, unicode lookalikes, NUL, option-like values, Jinja templates, repeated entries —
with every field of every DAG that takes a conf (build_images, smoke_deploy, nightly_images,
release_images, retag_images). tests/reliability/test_malformed_confs.py runs confs through the trigger
form's schema first; this table goes past the schema, as a conf from the API or the CLI would.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests
from airflow_image_factory.policy.release import validate_release_request
from airflow_image_factory.policy.request import validate_nightly_request, validate_request
from airflow_image_factory.policy.retag import validate_retag_request
from airflow_image_factory.tasks.groups import NIGHTLY_FIXED_FIELDS

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
SETTINGS = load_settings(env={})
MAX_MESSAGE = 300  # characters of one field's error
MAX_SECONDS = 1.0


def _nightly(conf: Any) -> Any:
    return validate_nightly_request(conf, SETTINGS, branches=SETTINGS.nightly_branches,
                                    fixed_fields=NIGHTLY_FIXED_FIELDS)


# dag_id → (its validate function, a conf it accepts, its text fields, its true/false fields)
DAGS: dict[str, tuple[Callable[[Any], Any], dict[str, Any], tuple[str, ...], tuple[str, ...]]] = {
    "build_images": (
        lambda conf: validate_request(conf, SETTINGS), {},
        ("branch", "registry", "repository", "source_repo", "commit_sha", "cache", "airflow_version", "naming"),
        ("push", "upgrade_to_newer_dependencies", "rebuild"),
    ),
    # smoke_deploy's validate task is build_images' (tasks.validate → validate_request)
    "smoke_deploy": (
        lambda conf: validate_request(conf, SETTINGS), {},
        ("branch", "registry", "repository", "source_repo", "commit_sha", "cache", "airflow_version", "naming"),
        ("push", "rebuild"),
    ),
    "nightly_images": (
        _nightly, {},
        ("registry", "repository", "source_repo", "cache", "airflow_version", "naming"),
        ("push", "rebuild"),
    ),
    "release_images": (
        lambda conf: validate_release_request(conf, SETTINGS), {"default_python": "3.12"},
        ("version", "default_python", "registry", "repository", "cache_branch", "constraints_url"),
        (),
    ),
    "retag_images": (
        lambda conf: validate_retag_request(conf, SETTINGS), {"target_branch": "v3-3-test"},
        ("source_branch", "target_branch", "registry", "repository", "naming"),
        ("dry_run",),
    ),
}


def _nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if depth % 2 else {"k": value}
    return value


# Values no text field accepts (label → value).
HOSTILE_TEXT = {
    "deep-list": _nested(sys.getrecursionlimit() * 10 + 1),
    "deep-object": _nested(sys.getrecursionlimit() * 10),
    "nested-33": _nested(33),
    "huge-string": "a" * 1_000_000,
    "huge-int": 10**5000,
    "cyrillic-a": "m\u0430in",
    "kelvin-sign": "\u212aocalhost",
    "fullwidth-digits": "\uff13.\uff13.\uff12",
    "nul": "main\x00--upload-pack=id",
    "option-upload-pack": "--upload-pack=touch /tmp/pwned",
    "option-short": "-oProxyCommand=id",
    "jinja-variable": "{{ var.value.secret }}",
    "jinja-statement": "{% for x in range(10**9) %}{% endfor %}",
    "jinja-in-list": ["{{ conn.registry.password }}"],
    "format-spec": "{version:>99999999}",
    "format-attribute": "{version.__class__.__init__.__globals__}",
    "shell": "$(touch /tmp/pwned)",
    "newline": "main\n--upload-pack=id",
    "bytes": b"main",
    "empty-object": {},
}
# Values no true/false field accepts.
HOSTILE_FLAG = {
    "text-true": "true", "one": 1, "option": "--force", "jinja": "{{ params.push }}", "list": [True],
    "deep": _nested(100, True), "huge-int": 10**5000, "null": None,
}
# Whole confs no validate function accepts, naming "conf".
NOT_AN_OBJECT = {
    "list": ["branch", "main"], "pairs-with-repeats": [["branch", "a"], ["branch", "b"]], "text": "branch=main",
    "number": 42, "float": 1.5, "true": True, "empty-list": [], "empty-text": "",
    "deep-list": _nested(sys.getrecursionlimit() * 10 + 1),
}


def _cases():
    for dag_id, (_, base, texts, flags) in DAGS.items():
        for label, conf in NOT_AN_OBJECT.items():
            yield pytest.param(dag_id, conf, "conf", id=f"{dag_id}-conf-{label}")
        for name in texts:
            for label, value in HOSTILE_TEXT.items():
                yield pytest.param(dag_id, {**base, name: value}, name, id=f"{dag_id}-{name}-{label}")
        for name in flags:
            for label, value in HOSTILE_FLAG.items():
                yield pytest.param(dag_id, {**base, name: value}, name, id=f"{dag_id}-{name}-{label}")
        # python_versions: deep, huge, lookalike, repeated (100 times the same bad entry gives one message)
        for label, value in {
            "deep": _nested(5000), "lookalike": ["3.1\u0661"], "option": ["--upload-pack=id"],
            "jinja": ["{{ var.value.x }}"], "repeated-bad": ["3.11; id" + "x" * 400] * 100,
            "repeated-good": ["3.11"] * 100, "huge": ["3.11"] * 50_000, "nul": ["3.11\x00"],
        }.items():
            yield pytest.param(dag_id, {**base, "python_versions": value}, "python_versions",
                               id=f"{dag_id}-python_versions-{label}")
        # a huge unknown field name, and a flood of unknown fields
        # variants (every DAG that builds or copies PROD images): the same shapes, with its own names
        if dag_id in ("build_images", "smoke_deploy", "nightly_images", "release_images", "retag_images"):
            for label, value in {
                "deep": _nested(5000), "lookalike": ["regul\u0430r"], "option": ["--upload-pack=id"],
                "jinja": ["{{ var.value.x }}"], "repeated-bad": ["slim; id" + "x" * 400] * 100,
                "repeated-good": ["slim"] * 100, "huge": ["regular"] * 50_000, "empty": [], "text": "slim",
            }.items():
                yield pytest.param(dag_id, {**base, "variants": value}, "variants", id=f"{dag_id}-variants-{label}")
        # platforms (every DAG that builds): the same shapes, with platform lookalikes and options
        if dag_id in ("build_images", "smoke_deploy", "nightly_images", "release_images"):
            for label, value in {
                "deep": _nested(5000), "lookalike": ["linux/arm٦٤"], "option": ["--platform=linux/arm64"],
                "jinja": ["{{ var.value.x }}"], "repeated-bad": ["linux/s390x; id" + "x" * 400] * 100,
                "repeated-good": ["linux/arm64"] * 100, "huge": ["linux/amd64"] * 50_000, "empty": [],
                "text": "linux/arm64", "unsupported": ["linux/riscv64"],
            }.items():
                yield pytest.param(dag_id, {**base, "platforms": value}, "platforms",
                                   id=f"{dag_id}-platforms-{label}")
        yield pytest.param(dag_id, {**base, "--upload-pack=" + "x" * 10_000: 1}, None, id=f"{dag_id}-unknown-huge-name")
        yield pytest.param(dag_id, {**base, **{f"f{i}": i for i in range(10_000)}}, None,
                           id=f"{dag_id}-unknown-flood")


CASES = list(_cases())


def test_the_table_covers_every_dag_that_takes_a_conf():
    from airflow_image_factory.policy.request import PARAM_NAMES

    assert {p.stem for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_")} == set(DAGS)
    assert set(DAGS["build_images"][2]) | set(DAGS["build_images"][3]) \
        | {"python_versions", "test_command", "variants", "platforms"} \
        == set(PARAM_NAMES)
    assert len(CASES) > 500


@pytest.mark.parametrize(("dag_id", "conf", "field"), CASES)
def test_hostile_conf_is_refused_naming_the_field(dag_id, conf, field):
    validate = DAGS[dag_id][0]
    started = time.monotonic()
    with pytest.raises(InvalidBuildRequest) as info:
        validate(conf)
    elapsed = time.monotonic() - started
    error = info.value
    assert isinstance(error, InvalidBuildRequests)
    fields = [e.field for e in error.errors]
    if field is not None:
        assert field in fields, str(error)[:500]
        assert set(fields) <= {field, "conf"}, str(error)[:500]  # nothing else was blamed
    for each in error.errors:
        assert len(str(each)) < MAX_MESSAGE, str(each)[:500]
        assert len(each.field) <= 40
    assert len(error.errors) <= 10
    assert elapsed < MAX_SECONDS


@pytest.mark.parametrize("dag_id", list(DAGS))
def test_unknown_fields_are_named_a_few_at_a_time(dag_id):
    validate, base, _, _ = DAGS[dag_id]
    with pytest.raises(InvalidBuildRequests) as info:
        validate({**base, **{f"f{i}": i for i in range(10_000)}, "x" * 10_000: 1})
    fields = [e.field for e in info.value.errors]
    assert len(fields) == 6 and fields[-1] == "conf"
    assert info.value.errors[-1].message == "and 9996 more unknown fields"
    assert len(str(info.value)) < 1500


@pytest.mark.parametrize("dag_id", list(DAGS))
def test_a_list_of_one_bad_version_repeated_gives_one_message(dag_id):
    validate, base, _, _ = DAGS[dag_id]
    with pytest.raises(InvalidBuildRequests) as info:
        validate({**base, "python_versions": ["3.99"] * 100})
    [error] = info.value.errors
    assert error.field == "python_versions" and "(repeated 100 times)" in error.message


@pytest.mark.parametrize("dag_id", list(DAGS))
def test_the_accepted_conf_is_accepted(dag_id):
    validate, base, _, _ = DAGS[dag_id]
    validate(base)
