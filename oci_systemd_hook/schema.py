"""JSON schemas for what the hook reads, used to explain bad input, never to accept it.

The hook's own parsers (ocistate.py, spec.py) decide what is valid with a few cheap checks
on the start path. Only once they have refused a document is jsonschema loaded, to say
which field is wrong and what was expected; `oci-systemd-hook validate` uses the same
machinery for hooks.d files. A schema's `x-messages` (validator -> text) hold this
project's wording.
"""

from __future__ import annotations

import os
import sys

from oci_systemd_hook import jsonlite
from oci_systemd_hook.errors import InputError

STATE_SCHEMA = "oci-state.schema.json"
CONFIG_SCHEMA = "oci-config.schema.json"
HOOKS_SCHEMA = "oci-hooks.schema.json"
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "an array", dict: "an object",
               float: "a number", type(None): "null"}


def load_schema(name: str) -> dict[str, object]:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    with open(path, "rb") as f:
        loaded = jsonlite.loads(f.read())
    assert isinstance(loaded, dict)
    return loaded


def import_jsonschema() -> object:
    """jsonschema, also from the -S launcher (which leaves site-packages off sys.path)."""
    try:
        import jsonschema
    except ImportError:
        if not sys.flags.no_site:
            raise InputError("this needs the jsonschema module (pip install jsonschema)") from None
        import site

        site.main()
        try:
            import jsonschema
        except ImportError:
            raise InputError("this needs the jsonschema module (pip install jsonschema)") from None
    return jsonschema


def field_path(parts: object) -> str:
    """`hook.args[1]` from a jsonschema error path."""
    text = ""
    for part in parts:  # type: ignore[attr-defined]
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(error: object, quoted: bool) -> str:
    """One line for a jsonschema ValidationError: the field, then what is wrong.

    quoted: `"pid" must be an integer, got a string` (state, config.json); otherwise
    `hook.path: "x" is not an absolute path` (hooks.d files, as `validate` prints them).
    """
    validator: str = error.validator  # type: ignore[attr-defined]
    path = list(error.absolute_path)  # type: ignore[attr-defined]
    instance = error.instance  # type: ignore[attr-defined]
    sub = error.schema if isinstance(error.schema, dict) else {}  # type: ignore[attr-defined]
    messages = sub.get("x-messages")
    message: str = error.message  # type: ignore[attr-defined]
    if validator == "required":
        name = message.split("'")[1] if message.count("'") >= 2 else "?"
        path, text = [*path, name], f"{name!r} is a required property" if not quoted else "is missing"
        if isinstance(messages, dict) and isinstance(messages.get("required"), dict):
            text = messages["required"].get(name, text)
    elif isinstance(messages, dict) and validator in messages:
        text = str(messages[validator])
        shown_value = jsonlite.dumps(instance) if isinstance(instance, (str, int, float)) else ""
        text = text.replace("{value}", shown_value[:80])
        if isinstance(instance, (str, list)):
            text = text.replace("{length}", str(len(instance)))
        if not path and quoted:
            return text
    else:
        text = message
    if not quoted:
        shown = jsonlite.dumps(instance) if validator not in ("required", "additionalProperties") else ""
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        if validator in ("required", "additionalProperties") or not isinstance(messages, dict) \
                or validator not in messages:
            return f"{field_path(path) or '(top level)'}: {text}"
        return f"{field_path(path) or '(top level)'}: {shown} {text}"
    if validator == "type":
        text += f", got {_TYPE_NAMES.get(type(instance), type(instance).__name__)}"
    return f'"{field_path(path)}" {text}' if path else text


def first_problem(document: object, schema_name: str, quoted: bool) -> str | None:
    """The shallowest problem jsonschema finds in `document`, as one line, or None."""
    jsonschema = import_jsonschema()
    schema = load_schema(schema_name)
    validator_class = jsonschema.validators.validator_for(schema)  # type: ignore[attr-defined]
    try:
        errors = list(validator_class(schema).iter_errors(document))
    except RecursionError:
        return None
    if not errors:
        return None
    first = min(errors, key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path],
                                       e.validator != "required"))
    return describe(first, quoted)


def explain(document: object, schema_name: str, prefix: str, fallback: str) -> str:
    """The message for a document the hook refused: jsonschema's words if it finds the
    problem, else the parser's own (`fallback`). Never raises."""
    try:
        problem = first_problem(document, schema_name, quoted=True)
    except Exception:  # an explanation must never replace the error itself
        problem = None
    if problem:  # keys and values come from the document: one line, whatever they hold
        problem = "".join(c if c.isprintable() else repr(c)[1:-1] for c in problem)
    return f"{prefix}: {problem}" if problem else fallback
