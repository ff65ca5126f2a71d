"""One request schema per DAG: the parsed DAG's trigger form is what its schema generates, and every field
of the form is validated by the same schema (a bad value for each is refused, naming the field).

The cases are generated from the schemas (policy.request.SCHEMAS, policy.release.RELEASE_SCHEMA,
policy.retag.RETAG_SCHEMA), not listed by hand: a field added to a schema is in these tests at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import InvalidBuildRequests
from airflow_image_factory.policy.release import RELEASE_SCHEMA, validate_release_request
from airflow_image_factory.policy.request import (
    SCHEMAS,
    BuildRequest,
    validate_nightly_request,
    validate_request,
    validate_smoke_request,
)
from airflow_image_factory.policy.retag import RETAG_SCHEMA, validate_retag_request
from airflow_image_factory.policy.schema import Field, RequestSchema
from airflow_image_factory.policy.settings import PARAM_NAMES

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
SETTINGS = load_settings()  # what the DAG files read at parse time (file + environment)

# dag_id → its schema: the three that take a build request's fields, and release's and retag's own.
DAG_SCHEMAS: dict[str, RequestSchema] = {
    **SCHEMAS, "release_images": RELEASE_SCHEMA, "retag_images": RETAG_SCHEMA,
}
# What a retag needs besides its defaults (the target has none); a case's own value comes last.
RETAG_BASE = {"target_branch": "v3-3-test"}

# dag_id → its validate step (what its validate task calls with the run's conf)
VALIDATORS = {
    "build_images": lambda conf: validate_request(conf, SETTINGS),
    "smoke_deploy": lambda conf: validate_smoke_request(conf, SETTINGS),
    "nightly_images": lambda conf: validate_nightly_request(conf, SETTINGS, branches=SETTINGS.nightly_branches),
    "release_images": lambda conf: validate_release_request(conf, SETTINGS),
    "retag_images": lambda conf: validate_retag_request({**RETAG_BASE, **conf}, SETTINGS),
}


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def test_every_dag_with_a_form_has_a_schema_and_a_validator(dags):
    assert {dag_id for dag_id, dag in dags.items() if dag.params} == set(DAG_SCHEMAS) == set(VALIDATORS)


@pytest.mark.parametrize("dag_id", sorted(DAG_SCHEMAS))
def test_the_defaults_are_a_valid_request(dags, dag_id):
    dags[dag_id].params.validate()  # the form, submitted as it opens
    VALIDATORS[dag_id]({})


@pytest.mark.parametrize("dag_id", sorted(DAG_SCHEMAS))
def test_the_dag_params_are_what_its_schema_generates(dags, dag_id):
    schema = DAG_SCHEMAS[dag_id]
    params = dags[dag_id].params
    properties = schema.json_schema(SETTINGS)["properties"]
    assert list(params.keys()) == list(properties) == list(schema.names)  # the same fields, in form order
    for name, expected in properties.items():
        param = params.get_param(name)
        expected = dict(expected)
        assert param.value == expected.pop("default"), name
        assert param.description == expected.pop("description", None), name
        assert param.schema == expected, name


@pytest.mark.parametrize("dag_id", sorted(DAG_SCHEMAS))
def test_every_form_field_has_a_title_and_a_description(dag_id):
    for spec in DAG_SCHEMAS[dag_id].fields:
        assert spec.title and spec.description, spec.name


def _bad_values(spec: Field) -> list[Any]:
    """Values the field's JSON type, choices or list shape refuse, read from its spec."""
    kind = spec.json_type
    bad: list[Any] = [{"string": 7, "boolean": "yes", "array": "not a list"}[kind], {"an": "object"}]
    if kind == "string" and not spec.optional:
        bad.append(None)
    if kind == "array":
        bad.append([])
    choices = spec.choices_for(SETTINGS)
    if choices:
        bad.append(["no-such-choice"] if kind == "array" else "no-such-choice")
        if kind == "array":
            bad.append([choices[0], choices[0]])
    return bad


def _cases():
    for dag_id, schema in sorted(DAG_SCHEMAS.items()):
        for spec in schema.fields:
            if spec.name in schema.fixed:
                yield pytest.param(dag_id, spec.name, spec.default_for(SETTINGS), schema.fixed[spec.name],
                                   id=f"{dag_id}-{spec.name}-fixed")
                continue
            for value in _bad_values(spec):
                yield pytest.param(dag_id, spec.name, value, None, id=f"{dag_id}-{spec.name}={value!r}"[:80])


CASES = list(_cases())


def test_the_generated_cases_cover_every_field_of_every_schema():
    covered = {(dag_id, name) for dag_id, name, _value, _says in (c.values for c in CASES)}
    assert covered == {(dag_id, f.name) for dag_id, schema in DAG_SCHEMAS.items() for f in schema.fields}


@pytest.mark.parametrize(("dag_id", "name", "value", "says"), CASES)
def test_a_bad_value_of_each_field_is_refused_naming_the_field(dag_id, name, value, says):
    with pytest.raises(InvalidBuildRequests) as info:
        VALIDATORS[dag_id]({name: value})
    assert {e.field for e in info.value.errors} == {name}, str(info.value)
    assert name in str(info.value)
    assert str(info.value).startswith(f"invalid {DAG_SCHEMAS[dag_id].what}")
    if says:
        assert says in str(info.value)


# The rules past a field's type and choices: its own rule, and what one field says of another.
RULE_CASES = [
    ("release_images", {"version": "03.3.2"}, "version", "write '3.3.2'"),
    ("release_images", {"version": "3.3.2.dev0"}, "version", "is not a released version"),
    ("release_images", {"cache_branch": "Not A Branch"}, "cache_branch", "must not contain spaces"),
    ("release_images", {"constraints_url": "ftp://x.example/c.txt"}, "constraints_url", "https://"),
    ("release_images", {"python_versions": ["3.11"], "default_python": "3.10"}, "default_python",
     "must be one of the release's python_versions (3.11)"),
    ("retag_images", {"target_branch": ""}, "target_branch", "is required"),
    ("retag_images", {"source_branch": "main", "target_branch": "main"}, "target_branch",
     "must differ from source_branch"),
    ("retag_images", {"push": True}, "push", "unknown field"),
]


@pytest.mark.parametrize(("dag_id", "conf", "name", "says"), RULE_CASES,
                         ids=[f"{d}-{n}" for d, _c, n, _s in RULE_CASES])
def test_a_rule_of_the_schema_names_its_field(dag_id, conf, name, says):
    with pytest.raises(InvalidBuildRequests) as info:
        VALIDATORS[dag_id](conf)
    assert {e.field for e in info.value.errors} == {name}, str(info.value)
    assert says in str(info.value)


def test_the_build_schema_holds_the_build_request_fields():
    assert DAG_SCHEMAS["build_images"].names == PARAM_NAMES
    request = validate_request({}, SETTINGS)
    assert set(PARAM_NAMES) <= set(request.to_dict())
    assert set(BuildRequest.__dataclass_fields__) - set(PARAM_NAMES) == {"ci_platforms", "debian", "python_base_source"}


def test_a_field_added_to_a_schema_is_in_the_form_and_validated():
    from airflow_image_factory.policy.schema import constant
    from airflow_image_factory.tasks.params import request_params

    extra = Field("flavour", "string", "Flavour", "What it tastes of.", default=constant("plain"),
                  choices=("plain", "salted"))
    schema = RequestSchema("toy request", (*DAG_SCHEMAS["build_images"].fields, extra))
    params = request_params(schema, SETTINGS)
    assert params["flavour"].value == "plain" and params["flavour"].description == "What it tastes of."
    assert params["flavour"].schema == {"type": "string", "title": "Flavour", "enum": ["plain", "salted"]}
    assert schema.validate({"flavour": "salted"}, SETTINGS)["flavour"] == "salted"
    with pytest.raises(InvalidBuildRequests, match="flavour: 'sweet' is not one of plain, salted"):
        schema.validate({"flavour": "sweet"}, SETTINGS)
    with pytest.raises(InvalidBuildRequests, match="flavour: unknown field"):
        DAG_SCHEMAS["build_images"].validate({"flavour": "salted"}, SETTINGS)


def test_the_smoke_form_says_what_its_fields_mean_to_a_deploy_with_the_build_requests_rules():
    from airflow_image_factory.policy.request import BUILD_SCHEMA, SMOKE_SCHEMA

    smoke, build = SMOKE_SCHEMA.json_schema(SETTINGS)["properties"], BUILD_SCHEMA.json_schema(SETTINGS)["properties"]
    # every build field but the variants (a smoke deploy deploys the regular image), in the same order
    assert list(smoke) == [name for name in build if name != "variants"] and "variants" in build
    assert "its :SHA tag" in smoke["commit_sha"]["description"]
    assert "instead of the branch head" in build["commit_sha"]["description"]
    assert {k: {**v, "description": None} for k, v in smoke.items()} == {
        k: {**v, "description": None} for k, v in build.items() if k != "variants"}
    with pytest.raises(ValueError, match="no fields"):
        BUILD_SCHEMA.describing({"no_such_field": "x"})
