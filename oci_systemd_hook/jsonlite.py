"""JSON for the hot path without the `json` package.

`import json` pulls in `re` and costs about as much as starting the interpreter
itself; the C scanner and string encoder in `_json` do the same work for free.
Decoding errors still come out as `ValueError` with a position.

`_json` is CPython's private accelerator: where an interpreter lacks it, the same
functions come from the `json` package, slower to import but equal in result.
"""

from __future__ import annotations

try:
    import _json
except ImportError:  # not CPython, or built without it: the public package does the same
    _json = None  # type: ignore[assignment]

_WHITESPACE = " \t\n\r"


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


class _ScannerContext:
    """The attributes `_json.make_scanner` reads from a `json.JSONDecoder`."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_reject_constant)
    memo: dict[str, str] = {}


if _json is not None:
    _scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]
    _quote = _json.encode_basestring_ascii
else:
    from json.decoder import JSONDecoder
    from json.encoder import py_encode_basestring_ascii as _quote  # type: ignore[attr-defined,no-redef]
    from json.scanner import py_make_scanner  # type: ignore[attr-defined]

    _decoder = JSONDecoder(parse_constant=_reject_constant, strict=True)
    _scan = py_make_scanner(_decoder)


def _skip_ws(text: str, idx: int) -> int:
    while idx < len(text) and text[idx] in _WHITESPACE:
        idx += 1
    return idx


def loads(data: str | bytes) -> object:
    """Parse one JSON document; raise ValueError (with a position) on anything else."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 at byte {exc.start}") from None
    else:
        text = data
    start = _skip_ws(text, 0)
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        pos = stop.value
        what = "empty input" if pos >= len(text) else f"expected a JSON value at char {pos}"
        raise ValueError(what) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except SystemError:
        # _json reports most syntax errors by raising json.decoder.JSONDecodeError, which it
        # only looks up in sys.modules: while nobody imported it (the hook never does), it
        # fails with SystemError instead. Import it on this error path only, and retry.
        import sys

        if "json.decoder" in sys.modules:
            raise
        import json.decoder  # noqa: F401

        return loads(data)
    end = _skip_ws(text, end)
    if end != len(text):
        raise ValueError(f"extra data after the JSON value at char {end}")
    return value


def dumps(value: object, indent: int | None = None) -> str:
    """Serialise str/int/float/bool/None/list/tuple/dict (with str keys) to JSON."""
    parts: list[str] = []
    _encode(value, parts, indent, 0)
    return "".join(parts)


def _encode(value: object, out: list[str], indent: int | None, level: int) -> None:
    if isinstance(value, str):
        out.append(_quote(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(repr(value))
    elif isinstance(value, float):
        if not -1.8e308 < value < 1.8e308:  # NaN, inf and -inf are not JSON
            raise ValueError(f"{value} cannot be written as JSON")
        out.append(repr(value))
    elif isinstance(value, (list, tuple, dict)):
        items = list(value.items()) if isinstance(value, dict) else list(value)
        opener, closer = ("{", "}") if isinstance(value, dict) else ("[", "]")
        if not items:
            out.append(opener + closer)
            return
        pad = "" if indent is None else "\n" + " " * (indent * (level + 1))
        out.append(opener)
        for n, item in enumerate(items):
            if n:
                out.append(",")
            out.append(pad)
            element = item
            if isinstance(value, dict):
                key, element = item
                if not isinstance(key, str):
                    raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
                out.append(_quote(key))
                out.append(": " if indent is not None else ":")
            _encode(element, out, indent, level + 1)
        out.append("" if indent is None else "\n" + " " * (indent * level))
        out.append(closer)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")
