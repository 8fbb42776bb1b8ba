"""jsonlite: the json-free parser/serialiser on the hook's hot path."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oci_systemd_hook import jsonlite

SAMPLES: list[object] = [
    None, True, False, 0, -1, 1 << 70, 1.5, -0.25, 1e300, "", "a", "é ü ☃ \U0001f600", "tab\tquote\"back\\slash\n",
    "\x00\x1f", [], {}, [1, [2, [3, []]]], {"a": {"b": {"c": None}}}, {"ociVersion": "1.0.2", "id": "x",
    "pid": 42, "annotations": {"k": "v"}}, [{"x": 1}, {"y": [True, False, None]}], ("tu", "ple"),
]


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_dumps_loads_round_trip(value: object) -> None:
    expected = list(value) if isinstance(value, tuple) else value
    assert jsonlite.loads(jsonlite.dumps(value)) == expected
    assert jsonlite.loads(jsonlite.dumps(value, indent=2)) == expected


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_dumps_matches_stdlib(value: object) -> None:
    assert jsonlite.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert jsonlite.dumps(value, indent=2) == json.dumps(value, indent=2)


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_loads_matches_stdlib(value: object) -> None:
    text = json.dumps(value, indent=1, ensure_ascii=False)
    assert jsonlite.loads(text) == json.loads(text)
    assert jsonlite.loads(text.encode("utf-8")) == json.loads(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None, database=None)
@given(json_values)
def test_equivalent_to_stdlib_on_generated_values(value: object) -> None:
    assert jsonlite.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert jsonlite.loads(json.dumps(value)) == json.loads(json.dumps(value))
    assert jsonlite.loads(jsonlite.dumps(value)) == value


def test_loads_accepts_surrounding_whitespace_and_bytes() -> None:
    assert jsonlite.loads(" \t\r\n{\"a\": [1, 2]}\n\n") == {"a": [1, 2]}
    assert jsonlite.loads(b'{"a": "\xc3\xa9"}') == {"a": "é"}
    assert jsonlite.loads(bytearray(b"[1]")) == [1]


def test_indent_layout() -> None:
    assert jsonlite.dumps({"a": [1, 2], "b": {}}, indent=2) == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": {}\n}'
    assert jsonlite.dumps({"a": [1, 2], "b": []}) == '{"a":[1,2],"b":[]}'


@pytest.mark.parametrize("text", ["", "   ", "\n\t", b"", b"  "])
def test_empty_input(text: str | bytes) -> None:
    with pytest.raises(ValueError, match="empty input"):
        jsonlite.loads(text)


@pytest.mark.parametrize(("text", "pos"), [('{"a": 1} x', 9), ("[1] [2]", 4), ("1 2", 2), ("{}}", 2), ("null,", 4)])
def test_trailing_data(text: str, pos: int) -> None:
    with pytest.raises(ValueError, match=f"extra data after the JSON value at char {pos}$"):
        jsonlite.loads(text)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "[1, NaN]", '{"limit": Infinity}'])
def test_nan_and_infinity_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="is not valid JSON"):
        jsonlite.loads(text)


@pytest.mark.parametrize("text", ["x", "{", "[1,", "{'a': 1}", '{"a" 1}', "tru", '"unterminated'])
def test_invalid_documents(text: str) -> None:
    with pytest.raises(ValueError):  # the message varies with the C scanner
        jsonlite.loads(text)


def test_bad_value_position() -> None:
    with pytest.raises(ValueError, match="expected a JSON value at char 2"):
        jsonlite.loads("  @")


def test_control_characters_in_strings_rejected() -> None:
    with pytest.raises(ValueError):
        jsonlite.loads('"a\nb"')


@pytest.mark.parametrize(("raw", "pos"), [(b'{"a": "\xff"}', 7), (b"\xc3", 0), (b'["ok", "\xed\xa0\x80"]', 8)])
def test_invalid_utf8(raw: bytes, pos: int) -> None:
    with pytest.raises(ValueError, match=f"not UTF-8 at byte {pos}$"):
        jsonlite.loads(raw)


def test_deep_nesting_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        jsonlite.loads("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        jsonlite.loads('{"a":' * 100_000 + "1" + "}" * 100_000)


def test_moderate_nesting_is_fine() -> None:
    assert jsonlite.loads("[" * 200 + "]" * 200) is not None


def test_duplicate_keys_last_wins_like_stdlib() -> None:
    assert jsonlite.loads('{"a": 1, "a": 2}') == {"a": 2} == json.loads('{"a": 1, "a": 2}')


def test_dumps_type_errors() -> None:
    with pytest.raises(TypeError, match="keys must be strings, not int"):
        jsonlite.dumps({1: "a"})
    with pytest.raises(TypeError, match="cannot encode set"):
        jsonlite.dumps({1, 2})
    with pytest.raises(TypeError, match="cannot encode bytes"):
        jsonlite.dumps([b"x"])


def test_dumps_escapes_non_ascii() -> None:
    assert jsonlite.dumps("é\u2028") == '"\\u00e9\\u2028"'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_dumps_never_produces_invalid_json(value: float) -> None:
    try:
        text = jsonlite.dumps([value])
    except ValueError:
        return  # refusing is fine
    jsonlite.loads(text)
