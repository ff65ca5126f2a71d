"""The shape of a run's conf, and the declarative request schemas that make both a DAG's trigger form and
its validation.

A :class:`RequestSchema` is a DAG's fields, in form order; each :class:`Field` says its JSON type, title,
description, choices (enum), default (a setting) and its rule. From the one list come the trigger form (plain
JSON-schema dicts: :meth:`RequestSchema.json_schema`; ``tasks.params`` turns them into Airflow ``Param``s) and
the check of a conf (:meth:`RequestSchema.validate`): a field added here is in the form and validated.

Pure: nothing of Airflow. The screening every validator runs first (:func:`screen_conf`, :func:`invalid`) and
how errors echo a user's values (:func:`show`) are here too, below the schemas that use them.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests
from airflow_image_factory.policy.settings import Settings, plain

# ---- the shape of a conf, and how errors show a user's values -------------------------------------

MAX_SHOWN = 60  # characters of a user's value an error message echoes
MAX_SHOWN_NAME = 40  # characters of an unknown field's name
MAX_CONF_DEPTH = 32  # nesting levels of lists/objects in one field
MAX_FIELD_SIZE = 64 * 1024  # characters of text (strings and keys) in one field
MAX_FIELD_ITEMS = 10_000  # values (lists, objects, scalars) in one field
MAX_UNKNOWN_REPORTED = 5  # unknown fields named one by one; the rest are counted
MAX_ERRORS_PER_FIELD = 5  # distinct messages per field; the rest are counted
# Jinja's markers: no value is ever rendered, so one holding them was meant for something else.
_TEMPLATE_MARKERS = ("{{", "{%")
# ...except a shell command for the CI container, where `docker inspect -f '{{.Id}}'` is ordinary
# (a schema's fields say so themselves: Field.templates_allowed).
_MAY_HOLD_TEMPLATE_MARKERS = frozenset({"test_command"})
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)


class _ShortRepr(reprlib.Repr):
    """reprlib with small limits, and no full repr of anything that could be huge or foreign."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxstring = self.maxother = MAX_SHOWN
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 4
        self.maxlong = 24

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a huge int is slow, and refused past 4300 digits
            return f"<{x.bit_length()}-bit integer>"
        return super().repr_int(x, level)

    def repr_instance(self, x: Any, level: int) -> str:
        if x is None or isinstance(x, (bool, float)):
            return repr(x)
        return f"<{type(x).__name__}>"


_SHORT_REPR = _ShortRepr()


def show(value: Any, limit: int = MAX_SHOWN) -> str:
    """A user's value as an error message echoes it: a short repr, non-ASCII escaped (lookalikes show
    as ``\\u0430``), at most ``limit`` characters. Every validator uses this, never ``{value!r}``."""
    text = _SHORT_REPR.repr(value).encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def show_name(name: Any) -> str:
    """A field name as an error names it: itself when short and plain, else :func:`show`'s form."""
    if isinstance(name, str) and len(name) <= MAX_SHOWN_NAME and _PLAIN_NAME.fullmatch(name):
        return name
    return show(name, MAX_SHOWN_NAME)


def _shape_error(value: Any, *, markers_allowed: bool = False) -> str | None:
    """What makes a field's value unfit to look at further, found without recursion: too deep, too
    big, not JSON, a NUL or a template marker anywhere in it."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    items = 1
    size = 0
    while stack:
        item, depth = stack.pop()
        texts: Iterable[Any] = ()
        if isinstance(item, str):
            texts = (item,)
        elif isinstance(item, (Mapping, list, tuple)):
            if depth > MAX_CONF_DEPTH:
                return f"is nested more than {MAX_CONF_DEPTH} levels deep"
            items += len(item)
            if items > MAX_FIELD_ITEMS:
                return f"holds more than {MAX_FIELD_ITEMS} values"
            if isinstance(item, Mapping):
                if not all(isinstance(key, str) for key in item):
                    return "has an object whose keys are not all text"
                texts = tuple(item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
        elif not (item is None or isinstance(item, (bool, int, float))):
            return f"holds a {type(item).__name__}; only JSON values (text, numbers, true/false, null, lists, objects)"
        for text in texts:
            size += len(text)
            if size > MAX_FIELD_SIZE:
                return f"is too large (more than {MAX_FIELD_SIZE} characters of text)"
            if "\x00" in text:
                return "must not contain NUL characters"
            if not markers_allowed and any(marker in text for marker in _TEMPLATE_MARKERS):
                return "must not contain template markers ('{{' or '{%'): no value is ever rendered"
    return None


class _ShapeError(InvalidBuildRequest):
    """A field :func:`screen_conf` refused: its default took its place, so later errors about it are moot."""


def conf_object(conf: Any, what: str = "build request") -> dict[str, Any]:
    """A run's conf as a dict to add fields to: None is empty, anything but an object is refused."""
    if conf is None:
        return {}
    if not isinstance(conf, Mapping):
        raise InvalidBuildRequests(
            [InvalidBuildRequest("conf", f"must be an object of field names and values, got {type(conf).__name__}")],
            what,
        )
    return dict(conf)


def screen_conf(
    conf: Any, known: Iterable[str], *, what: str = "build request",
    markers_allowed: Iterable[str] = _MAY_HOLD_TEMPLATE_MARKERS,
) -> tuple[dict[str, Any], list[InvalidBuildRequest]]:
    """The checks every validator runs first: ``conf`` is an object (raises at once otherwise), its
    unknown fields are named (a few, the rest counted), and each known field's value is JSON of
    bounded depth and size (``markers_allowed``: the fields that may hold template markers). Returns the
    fields fit to validate and the errors found so far."""
    conf = conf_object(conf, what)
    markers_allowed = frozenset(markers_allowed)
    known = tuple(known)
    errors: list[InvalidBuildRequest] = []
    unknown = sorted((show_name(name) for name in conf if name not in known), key=str)
    for name in unknown[:MAX_UNKNOWN_REPORTED]:
        errors.append(InvalidBuildRequest(name, f"unknown field; known fields are {', '.join(known)}"))
    if len(unknown) > MAX_UNKNOWN_REPORTED:
        errors.append(InvalidBuildRequest("conf", f"and {len(unknown) - MAX_UNKNOWN_REPORTED} more unknown fields"))
    fit: dict[str, Any] = {}
    for name in known:
        if name not in conf:
            continue
        if problem := _shape_error(conf[name], markers_allowed=name in markers_allowed):
            errors.append(_ShapeError(name, problem))
        else:
            fit[name] = conf[name]
    return fit, errors


def invalid(errors: Iterable[InvalidBuildRequest], what: str = "build request") -> InvalidBuildRequests:
    """One exception for every error, each message once: a repeated one says how often, and a field
    with many different problems shows the first few and counts the rest. A field the screen refused
    reports only that (not what its default, judged in its place, lacks)."""
    errors = list(errors)
    refused = {e.field for e in errors if isinstance(e, _ShapeError)}
    counts: dict[tuple[str, str], int] = {}
    for error in errors:
        if error.field in refused and not isinstance(error, _ShapeError):
            continue
        key = (error.field, error.message)
        counts[key] = counts.get(key, 0) + 1
    shown: list[InvalidBuildRequest] = []
    per_field: dict[str, int] = {}
    for (name, message), count in counts.items():
        per_field[name] = per_field.get(name, 0) + 1
        if per_field[name] <= MAX_ERRORS_PER_FIELD:
            shown.append(InvalidBuildRequest(name, message if count == 1 else f"{message} (repeated {count} times)"))
    for name, count in per_field.items():
        if count > MAX_ERRORS_PER_FIELD:
            shown.append(InvalidBuildRequest(name, f"and {count - MAX_ERRORS_PER_FIELD} more problems"))
    return InvalidBuildRequests(shown, what)


# ---- the request schemas ------------------------------------------------------------------------------

Fail = Callable[[str], None]
# A field's own rule, run on a value of the field's JSON type: reports problems through ``fail`` (as many
# as it finds) and returns the value as the request holds it (normalised: lower case, one order, ...).
Rule = Callable[[Any, Fail], Any]
# What a value (or, for an array, each item) may be: fixed, or read from the settings.
Choices = Sequence[str] | Callable[[Settings], Sequence[str]]
# A list item's own rule: its problem, given the field's choices, or None.
ItemRule = Callable[[Any, Sequence[str]], str | None]


def setting(name: str) -> Callable[[Settings], Any]:
    """A field default: the setting ``name`` (as JSON carries it: tuples as lists)."""
    return lambda settings: plain(getattr(settings, name))


def constant(value: Any) -> Callable[[Settings], Any]:
    """A field default that is the same whatever the settings say."""
    return lambda _settings: value


def refuse(problem: Callable[[Any], str | None]) -> Rule:
    """A rule from a function saying what is wrong with a value (None: nothing); the value stays as it is."""

    def rule(value: Any, fail: Fail) -> Any:
        if message := problem(value):
            fail(message)
        return value

    return rule


_FROM_SETTINGS: Any = object()


def _keep(value: Any, _fail: Fail) -> Any:
    return value


@dataclass(frozen=True)
class Field:
    """One field of a request: its form (JSON type, title, description, choices, default) and its check.

    The check runs in this order: the JSON type (``"string"``, ``"boolean"``, ``"array"``; with
    ``"null"`` in ``type`` the field is optional, and an empty string counts as null), the ``choices``
    (a string's value, each item of an array), then ``rule``. Every message names the field.
    """

    name: str
    type: str | tuple[str, ...]
    title: str
    description: str | None = None
    # Settings -> the default; None: the setting of the field's own name.
    default: Callable[[Settings], Any] | None = None
    choices: Choices | None = None
    rule: Rule = _keep
    # Arrays: the form's example in "must be a non-empty list like ...", and each item's rule (given the
    # choices; None: an item must be one of them, as ``item_message`` says).
    example: str = ""
    item_rule: ItemRule | None = None
    # Further JSON-schema keywords of the form (minItems, uniqueItems, ...).
    form: Mapping[str, Any] = field(default_factory=dict)
    # A shell command may hold Jinja-like braces (never rendered); every other field may not.
    templates_allowed: bool = False

    @property
    def types(self) -> tuple[str, ...]:
        return (self.type,) if isinstance(self.type, str) else tuple(self.type)

    @property
    def json_type(self) -> str:
        """The type of a value that is not null."""
        return next(t for t in self.types if t != "null")

    @property
    def optional(self) -> bool:
        return "null" in self.types

    def choices_for(self, settings: Settings | None) -> list[str] | None:
        if self.choices is None:
            return None
        return list(self.choices(settings) if callable(self.choices) else self.choices)

    def default_for(self, settings: Settings) -> Any:
        return (self.default or setting(self.name))(settings)

    def json_schema(self, settings: Settings | None, *, default: Any = _FROM_SETTINGS) -> dict[str, Any]:
        """The field's trigger-form entry as plain JSON schema, with ``default`` (else the settings').
        ``settings`` may be None for a field whose choices are fixed, when ``default`` is given."""
        schema: dict[str, Any] = {"type": self.type if isinstance(self.type, str) else list(self.type),
                                  "title": self.title}
        if self.description:
            schema["description"] = self.description
        if (choices := self.choices_for(settings)) is not None:
            if self.json_type == "array":
                schema["items"] = {"type": "string", "enum": choices}
            else:
                schema["enum"] = choices
        schema.update(self.form)
        schema["default"] = self.default_for(settings) if default is _FROM_SETTINGS else default
        return schema

    def check(self, value: Any, settings: Settings, fail: Fail) -> Any:
        """``value`` as the request holds it; its problems go to ``fail`` (then what it returns is moot)."""
        kind = self.json_type
        if self.optional and value in (None, ""):
            return None
        if kind == "boolean":
            if not isinstance(value, bool):
                fail(f"must be true or false, got {show(value)}")
                return False
            return self.rule(value, fail)
        if kind == "array":
            return self._check_array(value, settings, fail)
        if value is None:
            fail("is required")
            return None
        if not isinstance(value, str):
            fail(f"must be a string, got {type(value).__name__}")
            return None
        choices = self.choices_for(settings)
        if choices is not None and value not in choices:
            fail(f"{show(value)} is not one of {', '.join(choices)}")
            return value
        return self.rule(value, fail)

    def _check_array(self, value: Any, settings: Settings, fail: Fail) -> Any:
        if not isinstance(value, (list, tuple)) or not value:
            fail(f"must be a non-empty list like {self.example}, got {show(value)}")
            return ()
        choices = self.choices_for(settings) or []
        kept: list[Any] = []
        for item in value:
            if problem := (self.item_rule or _one_of)(item, choices):
                fail(problem)
            elif item in kept:
                fail(f"{item} is listed more than once")
            else:
                kept.append(item)
        return self.rule(tuple(kept), fail)


def _one_of(item: Any, choices: Sequence[str]) -> str | None:
    return None if item in choices else f"{show(item)} is not one of {', '.join(choices)}"


@dataclass(frozen=True)
class RequestSchema:
    """A DAG's request: its fields in form order, and ``what`` the errors call it ("build request").

    ``fixed`` names fields the DAG decides itself: they are in no form, and a conf naming one is refused
    with its message (not as an unknown field). One list makes the trigger form (:meth:`json_schema`) and
    the check (:meth:`validate`, or :meth:`check` to add cross-field errors before raising).
    """

    what: str
    fields: tuple[Field, ...]
    fixed: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The fields a conf may set (the form's, in order)."""
        return tuple(f.name for f in self.fields if f.name not in self.fixed)

    def spec(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def fixing(self, fixed: Mapping[str, str], what: str | None = None) -> RequestSchema:
        """This schema with the fields of ``fixed`` decided by the DAG (name -> the message a conf gets)."""
        return replace(self, fixed={**self.fixed, **fixed}, what=what or self.what)

    def describing(self, descriptions: Mapping[str, str]) -> RequestSchema:
        """This schema with other form descriptions for some fields (same rules: what a field means to
        another DAG that takes the same request)."""
        unknown = set(descriptions) - {f.name for f in self.fields}
        if unknown:
            raise ValueError(f"{self.what} has no fields {sorted(unknown)}")
        return replace(self, fields=tuple(replace(f, description=descriptions.get(f.name, f.description))
                                          for f in self.fields))

    def json_schema(self, settings: Settings) -> dict[str, Any]:
        """The trigger form as a JSON-schema object: one property per field a conf may set, in form order,
        each with its default from ``settings``."""
        return {
            "type": "object",
            "properties": {f.name: f.json_schema(settings) for f in self.fields if f.name not in self.fixed},
        }

    def defaults(self, settings: Settings) -> dict[str, Any]:
        return {f.name: f.default_for(settings) for f in self.fields if f.name not in self.fixed}

    def screen(
        self, conf: Any, *, allowed_extra: Iterable[str] = ()
    ) -> tuple[dict[str, Any], list[InvalidBuildRequest]]:
        """:func:`screen_conf` with this schema's fields (fixed ones included, and refused with their
        message), plus ``allowed_extra`` (accepted, not validated here)."""
        known = (*(f.name for f in self.fields), *allowed_extra)
        markers = [f.name for f in self.fields if f.templates_allowed]
        screened, errors = screen_conf(conf, known, what=self.what, markers_allowed=markers)
        errors.extend(InvalidBuildRequest(name, message) for name, message in self.fixed.items() if name in screened)
        return {k: v for k, v in screened.items() if k not in self.fixed}, errors

    def check(
        self, conf: Any, settings: Settings, *, allowed_extra: Iterable[str] = ()
    ) -> tuple[dict[str, Any], list[InvalidBuildRequest]]:
        """``conf`` over the settings' defaults, every field checked: the values as the request holds them
        (only this schema's fields) and every error found. Raises at once only for a conf that is not an
        object. For a caller with cross-field rules: add their errors, then ``raise invalid(errors, what)``."""
        screened, errors = self.screen(conf, allowed_extra=allowed_extra)
        values = {**self.defaults(settings), **{k: v for k, v in screened.items() if k in self.names}}
        checked: dict[str, Any] = {}
        for spec in self.fields:
            if spec.name in self.fixed:
                continue

            def fail(message: str, name: str = spec.name) -> None:
                errors.append(InvalidBuildRequest(name, message))

            checked[spec.name] = spec.check(values.get(spec.name), settings, fail)
        return checked, errors

    def validate(self, conf: Any, settings: Settings, *, allowed_extra: Iterable[str] = ()) -> dict[str, Any]:
        """:meth:`check`, raising :class:`InvalidBuildRequests` that lists every bad field at once."""
        checked, errors = self.check(conf, settings, allowed_extra=allowed_extra)
        if errors:
            raise invalid(errors, self.what)
        return checked
