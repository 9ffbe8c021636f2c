"""Request bodies: media type, strict JSON, schema checks that never echo input.

Flask-RESTX's own validation repeats submitted values in its messages (a password
must never come back) and trips over bodies that are not objects, so bodies are
read here instead, against the same models the OpenAPI document shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from flask import current_app, request
from flask_restx import Model
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

from ..errors import Code, Problem

#: Where each app keeps its validators (their schemas follow its settings).
VALIDATORS = "authsvc.validators"

_TYPE_WORDS = {
    "string": "a string",
    "boolean": "true or false",
    "integer": "a whole number",
    "array": "a list",
    "object": "an object",
}


#: The member under which a body that is not a JSON object at all is reported.
BODY = "body"

#: A use case's own checks of a body that passed its schema, or of the fields that
#: did: more invalid fields, reported with the schema's in one answer.
Rules = Callable[[dict[str, Any]], Mapping[str, str]]


def read_json(
    model: Model, *, optional: bool = False, rules: Rules | None = None
) -> dict[str, Any]:
    """Return the request's JSON object after checking it against ``model``.

    With ``optional``, an empty body reads as ``{}``. ``rules`` see the body even
    when the schema found faults, so every invalid field is reported at once.
    """
    if optional and not request.content_length and not request.get_data(cache=True):
        return {}
    return checked(model, read_object(), rules)


def read_object() -> dict[str, Any]:
    """Return the request's JSON object, unchecked; anything else is refused."""
    if not request.is_json:
        raise Problem(Code.UNSUPPORTED_MEDIA_TYPE)
    body = parse_json(request.get_data(cache=True))
    if not isinstance(body, dict):
        raise body_problem("The request body must be a JSON object.")
    return body


def checked(
    model: Model, body: dict[str, Any], rules: Rules | None = None
) -> dict[str, Any]:
    """Return ``body`` if it fits ``model`` and ``rules``; else every fault at once."""
    errors = schema_errors(model, body)
    if rules is not None:
        # The use case's message about a field it could check says more than the
        # schema's (which pattern, which policy); it sees only fields of its type.
        errors = {**errors, **rules(body)}
    if errors:
        raise Problem(Code.VALIDATION_ERROR, errors=errors)
    return body


def body_problem(message: str) -> Problem:
    """The ``validation_error`` of a body that cannot be read as a JSON object."""
    return Problem(Code.VALIDATION_ERROR, message, errors={BODY: message})


FORM_MIMETYPE = "application/x-www-form-urlencoded"


def read_form_or_json(model: Model) -> dict[str, Any]:
    """Read a body that RFC 7009 and RFC 7662 send form-encoded, or JSON."""
    if request.mimetype != FORM_MIMETYPE:
        return read_json(model)
    form = request.form
    repeated = {
        name: "must be given once" for name in form if len(form.getlist(name)) > 1
    }
    if repeated:
        raise Problem(Code.VALIDATION_ERROR, errors=repeated)
    body = form.to_dict()
    for text in _strings(body):
        if "\x00" in text or not _is_encodable(text):
            raise body_problem(INVALID_CHARACTERS)
    return checked(model, body)


def parse_json(data: bytes) -> Any:
    """Parse strictly: no NaN, Infinity, duplicate keys, lone surrogates or NUL."""
    try:
        value = json.loads(
            data, parse_constant=_reject_constant, object_pairs_hook=_unique_object
        )
    except (ValueError, RecursionError):
        raise body_problem("The request body is not valid JSON.") from None
    for text in _strings(value):
        if "\x00" in text or not _is_encodable(text):
            raise body_problem(INVALID_CHARACTERS)
    return value


INVALID_CHARACTERS = "The request body contains NUL or a lone surrogate."


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def schema_errors(model: Model, body: dict[str, Any]) -> dict[str, str]:
    """Check ``body`` against the model's JSON schema; one message per field."""
    validator = _validator(model)
    errors: dict[str, str] = {}
    for error in validator.iter_errors(body):
        for field, message in _describe(error, validator.schema, body):
            errors.setdefault(field, message)
    return errors


def _validator(model: Model) -> Draft4Validator:
    # Models are declared once at import, but a schema may follow the app's
    # settings (the password policy), so each app keeps one validator per model.
    # Strict models refuse unknown fields (``additionalProperties: false``).
    validators = current_app.extensions.setdefault(VALIDATORS, {})
    validator: Draft4Validator | None = validators.get(model.name)
    if validator is None:
        validator = validators[model.name] = Draft4Validator(model.__schema__)
    return validator


def _describe(
    error: ValidationError, schema: bool | Mapping[str, Any], body: dict[str, Any]
) -> Iterator[tuple[str, str]]:
    if error.validator == "required":
        # Unset is only for errors made by hand, not those a validator yields.
        for name in cast(list[str], error.validator_value):
            if name not in body:
                yield name, "is required"
        return
    if error.validator == "additionalProperties":
        known = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
        for name in body.keys() - known.keys():
            yield name, "is not a known field"
        return
    field = str(error.path[0]) if error.path else BODY
    limit = error.validator_value
    messages = {
        "type": f"must be {_TYPE_WORDS.get(str(limit), str(limit))}",
        "minLength": f"must be at least {limit} characters",
        "maxLength": f"must be at most {limit} characters",
        "maxItems": f"must have at most {limit} items",
        "pattern": "has characters that are not allowed",
    }
    yield field, messages.get(str(error.validator), "is not valid")


def read_int_arg(name: str, *, default: int, minimum: int, maximum: int) -> int:
    """Read an integer query argument within bounds, or raise ``validation_error``."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not minimum <= int(raw) <= maximum:
        raise Problem(
            Code.VALIDATION_ERROR,
            errors={name: f"must be a whole number from {minimum} to {maximum}"},
        )
    return int(raw)


def read_text_arg(name: str, *, max_length: int) -> str:
    """Read a text query argument cut to ``max_length``; NUL in it is refused."""
    text = request.args.get(name, "")[:max_length]
    if "\x00" in text:
        raise Problem(Code.VALIDATION_ERROR, errors={name: "must not contain NUL"})
    return text
