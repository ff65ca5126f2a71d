"""One request schema per DAG: the parsed DAG's trigger form is what its schema generates, and every field
of the form is validated by the same schema (a bad value for each is refused, naming the field).

The cases are generated from the schemas (policy.request.SCHEMAS), not listed by hand: a field added to a
schema is in these tests at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import InvalidBuildRequests
from airflow_image_factory.policy.request import (
    SCHEMAS,
    BuildRequest,
    validate_nightly_request,
    validate_request,
)
from airflow_image_factory.policy.schema import Field, RequestSchema
from airflow_image_factory.policy.settings import PARAM_NAMES

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
SETTINGS = load_settings()  # what the DAG files read at parse time (file + environment)

# dag_id → its validate step (what its validate task calls with the run's conf)
VALIDATORS = {
    "build_images": lambda conf: validate_request(conf, SETTINGS),
    "smoke_deploy": lambda conf: validate_request(conf, SETTINGS),
    "nightly_images": lambda conf: validate_nightly_request(conf, SETTINGS, branches=SETTINGS.nightly_branches),
}


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def test_every_schema_has_a_validator_and_a_dag():
    assert set(SCHEMAS) == set(VALIDATORS)
    assert {p.stem for p in DAGS_DIR.glob("*.py")} >= set(SCHEMAS)


@pytest.mark.parametrize("dag_id", sorted(SCHEMAS))
def test_the_dag_params_are_what_its_schema_generates(dags, dag_id):
    schema = SCHEMAS[dag_id]
    params = dags[dag_id].params
    properties = schema.json_schema(SETTINGS)["properties"]
    assert list(params.keys()) == list(properties) == list(schema.names)  # the same fields, in form order
    for name, expected in properties.items():
        param = params.get_param(name)
        expected = dict(expected)
        assert param.value == expected.pop("default"), name
        assert param.description == expected.pop("description", None), name
        assert param.schema == expected, name


@pytest.mark.parametrize("dag_id", sorted(SCHEMAS))
def test_every_form_field_has_a_title_and_a_description(dag_id):
    for spec in SCHEMAS[dag_id].fields:
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
    for dag_id, schema in sorted(SCHEMAS.items()):
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
    assert covered == {(dag_id, f.name) for dag_id, schema in SCHEMAS.items() for f in schema.fields}


@pytest.mark.parametrize(("dag_id", "name", "value", "says"), CASES)
def test_a_bad_value_of_each_field_is_refused_naming_the_field(dag_id, name, value, says):
    with pytest.raises(InvalidBuildRequests) as info:
        VALIDATORS[dag_id]({name: value})
    assert {e.field for e in info.value.errors} == {name}, str(info.value)
    assert name in str(info.value)
    if says:
        assert says in str(info.value)


def test_the_build_schema_holds_the_build_request_fields():
    assert SCHEMAS["build_images"].names == PARAM_NAMES
    request = validate_request({}, SETTINGS)
    assert set(PARAM_NAMES) <= set(request.to_dict())
    assert set(BuildRequest.__dataclass_fields__) - set(PARAM_NAMES) == {"debian", "python_base_source"}


def test_a_field_added_to_a_schema_is_in_the_form_and_validated():
    from airflow_image_factory.policy.schema import constant
    from airflow_image_factory.tasks.params import request_params

    extra = Field("flavour", "string", "Flavour", "What it tastes of.", default=constant("plain"),
                  choices=("plain", "salted"))
    schema = RequestSchema("toy request", (*SCHEMAS["build_images"].fields, extra))
    params = request_params(schema, SETTINGS)
    assert params["flavour"].value == "plain" and params["flavour"].description == "What it tastes of."
    assert params["flavour"].schema == {"type": "string", "title": "Flavour", "enum": ["plain", "salted"]}
    assert schema.validate({"flavour": "salted"}, SETTINGS)["flavour"] == "salted"
    with pytest.raises(InvalidBuildRequests, match="flavour: 'sweet' is not one of plain, salted"):
        schema.validate({"flavour": "sweet"}, SETTINGS)
    with pytest.raises(InvalidBuildRequests, match="flavour: unknown field"):
        SCHEMAS["build_images"].validate({"flavour": "salted"}, SETTINGS)
