"""The OCI state on stdin: what runc, crun, podman and old Docker send, and every way it can be wrong."""

from __future__ import annotations

import io
import os

import pytest

from oci_systemd_hook import jsonlite
from oci_systemd_hook.errors import HookError, InputError
from oci_systemd_hook.ocistate import MAX_STATE_BYTES, parse_state, read_state

HEX64 = "3f2a9c1be0d447a8b6e5f4c3d2a1b0c98f7e6d5c4b3a29180716253443526170"


def state(**fields: object) -> bytes:
    base: dict[str, object] = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 4242,
                               "bundle": "/run/bundles/c1"}
    for key, value in fields.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return jsonlite.dumps(base).encode()


def test_runc_prestart_state() -> None:
    raw = (b'{"ociVersion":"1.0.2-dev","id":"' + HEX64.encode() + b'","status":"creating","pid":31337,'
           b'"bundle":"/run/containers/storage/overlay-containers/x/userdata",'
           b'"annotations":{"io.podman.annotations.autoremove":"FALSE"}}')
    s = parse_state(raw)
    assert s.id == HEX64
    assert s.pid == 31337
    assert s.status == "creating"
    assert s.bundle == "/run/containers/storage/overlay-containers/x/userdata"
    assert s.annotations == {"io.podman.annotations.autoremove": "FALSE"}
    assert s.version == "1.0.2-dev"


def test_crun_created_state() -> None:
    s = parse_state(state(status="created", ociVersion="1.1.0"))
    assert (s.status, s.pid, s.version, s.annotations) == ("created", 4242, "1.1.0", {})


def test_poststop_without_pid() -> None:
    s = parse_state(state(status="stopped", pid=...))
    assert s.pid is None
    assert s.status == "stopped"


def test_pid_zero_means_gone() -> None:
    assert parse_state(state(pid=0, status="stopped")).pid is None


def test_pid_null_means_absent() -> None:
    assert parse_state(state(pid=None)).pid is None


def test_legacy_bundle_path() -> None:
    s = parse_state(state(bundle=..., bundlePath="/var/lib/docker/c1"))
    assert s.bundle == "/var/lib/docker/c1"


def test_bundle_wins_over_bundle_path() -> None:
    assert parse_state(state(bundle="/a", bundlePath="/b")).bundle == "/a"


def test_bundle_is_normalised() -> None:
    assert parse_state(state(bundle="/run//bundles/./c1/")).bundle == "/run/bundles/c1"


def test_optional_fields_may_be_missing() -> None:
    s = parse_state(b'{"id": "c1", "bundle": "/b"}')
    assert (s.id, s.bundle, s.pid, s.status, s.version, s.annotations) == ("c1", "/b", None, "", "", {})


def test_str_input_and_whitespace() -> None:
    assert parse_state("\n " + state().decode() + "\n").id == "c1"


def expect_error(raw: bytes | str, *fragments: str) -> InputError:
    with pytest.raises(InputError) as info:
        parse_state(raw)
    err = info.value
    assert isinstance(err, HookError)
    assert err.code == 2
    for fragment in fragments:
        assert fragment in err.message, err.message
    assert "\n" not in err.message
    return err


@pytest.mark.parametrize("raw", [b"", b"   \n", ""])
def test_empty(raw: bytes | str) -> None:
    expect_error(raw, "no OCI state on stdin")


@pytest.mark.parametrize("raw", [b"{", b"{} {}", b"NaN", b'{"id": "c1",}', b'{"pid": Infinity}'])
def test_not_json(raw: bytes) -> None:
    expect_error(raw, "not valid JSON")


def test_invalid_utf8() -> None:
    expect_error(b'{"id": "\xff"}', "not valid JSON", "not UTF-8 at byte 8")


@pytest.mark.parametrize(("raw", "kind"), [(b"[]", "an array"), (b'"x"', "a string"), (b"3", "an integer"),
                                           (b"null", "null"), (b"true", "a boolean")])
def test_not_an_object(raw: bytes, kind: str) -> None:
    expect_error(raw, "must be a JSON object", kind)


@pytest.mark.parametrize(
    ("fields", "fragments"),
    [
        ({"id": ...}, ('"id"', "is missing")),
        ({"id": ""}, ('"id"', "non-empty string")),
        ({"id": 12}, ('"id"', "non-empty string")),
        ({"id": "../etc"}, ('"id"', '"../etc"', "may only contain")),
        ({"id": ".."}, ('"id"', 'start with "."')),
        ({"id": "x" * 300}, ('"id"', "300 characters")),
        ({"pid": "42"}, ('"pid"', "must be an integer", "a string")),
        ({"pid": 4.0}, ('"pid"', "must be an integer", "a number")),
        ({"pid": True}, ('"pid"', "must be an integer", "a boolean")),
        ({"pid": [1]}, ('"pid"', "an array")),
        ({"pid": -1}, ('"pid"', "-1 is not a valid process id")),
        ({"pid": 1 << 40}, ('"pid"', "not a valid process id")),
        ({"bundle": ...}, ('"bundle" is missing',)),
        ({"bundle": ""}, ('"bundle"', "absolute path")),
        ({"bundle": 7}, ('"bundle"', "must be a string", "an integer")),
        ({"bundle": ["/b"]}, ('"bundle"', "an array")),
        ({"bundle": "relative/dir"}, ('"bundle"', "absolute path", '"relative/dir"')),
        ({"bundle": "/b\0x"}, ('"bundle"', "absolute path")),
        ({"bundle": ..., "bundlePath": "rel"}, ('"bundlePath"', "absolute path")),
        ({"status": 1}, ('"status"', "must be a string", "an integer")),
        ({"annotations": {"a": 1}}, ('"annotations.a"', "must be a string")),
        ({"annotations": ["a"]}, ('"annotations"', "object of strings")),
        ({"annotations": "a=b"}, ('"annotations"', "object of strings")),
        ({"ociVersion": 1.0}, ('"ociVersion"', "must be a string", "a number")),
    ],
    ids=repr,
)
def test_field_errors_name_the_field(fields: dict[str, object], fragments: tuple[str, ...]) -> None:
    err = expect_error(state(**fields), *fragments)
    assert err.message.startswith("state: "), err.message


def test_long_bad_bundle_is_truncated_in_the_message() -> None:
    err = expect_error(state(bundle="r" * 5000), '"bundle"')
    assert len(err.message) < 400


def test_read_state_from_binary_stream() -> None:
    s = read_state(io.BytesIO(state(status="stopped", pid=...)))
    assert (s.id, s.pid, s.status) == ("c1", None, "stopped")


def test_read_state_from_pipe() -> None:
    r, w = os.pipe()
    os.write(w, state())
    os.close(w)
    with os.fdopen(r, "rb") as stream:
        assert read_state(stream).pid == 4242


def test_read_state_empty_stream() -> None:
    with pytest.raises(InputError, match="no OCI state on stdin") as info:
        read_state(io.BytesIO(b""))
    assert info.value.code == 2


def test_read_state_none_from_nonblocking_stream() -> None:
    class Empty:
        def read(self, n: int) -> None:
            return None

    with pytest.raises(InputError, match="no OCI state"):
        read_state(Empty())


def test_read_state_os_error() -> None:
    class Broken:
        def read(self, n: int) -> bytes:
            raise OSError(5, "Input/output error")

    with pytest.raises(InputError, match="cannot read the OCI state from stdin: Input/output error") as info:
        read_state(Broken())
    assert info.value.code == 2


def test_more_than_one_mib_on_stdin_is_refused() -> None:
    padding = " " * MAX_STATE_BYTES
    raw = state()[:-1] + b"," + b'"pad":"' + padding.encode() + b'"}'
    assert len(raw) > MAX_STATE_BYTES
    with pytest.raises(InputError, match="larger than 1024 KiB") as info:
        read_state(io.BytesIO(raw))
    assert info.value.code == 2


def test_exactly_one_mib_is_accepted() -> None:
    head = state()[:-1] + b',"pad":"'
    raw = head + b"x" * (MAX_STATE_BYTES - len(head) - 2) + b'"}'
    assert len(raw) == MAX_STATE_BYTES
    assert read_state(io.BytesIO(raw)).id == "c1"


def test_bundle_that_is_not_a_valid_path_is_an_input_error() -> None:
    expect_error(b'{"id": "c1", "bundle": "/run/\\ud800x"}', '"bundle"')
