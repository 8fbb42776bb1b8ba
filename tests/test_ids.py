"""Container ids (host-side names) and machine ids (what systemd accepts)."""

from __future__ import annotations

import pytest

from oci_systemd_hook.errors import InputError
from oci_systemd_hook.ids import (
    MAX_ID_LENGTH,
    check_container_id,
    is_machine_id,
    machine_id_for,
    machine_id_from_uuid,
    short_id,
    uuid_format,
)

HEX64 = "3f2a9c1be0d447a8b6e5f4c3d2a1b0c98f7e6d5c4b3a29180716253443526170"


@pytest.mark.parametrize("cid", ["a", "abc-DEF_0.9+x", HEX64, "web.1", "x" * MAX_ID_LENGTH, "0", "a..b", "A"])
def test_accepts_runc_alphabet(cid: str) -> None:
    assert check_container_id(cid) == cid


@pytest.mark.parametrize(
    ("cid", "fragment"),
    [
        ("a/b", "'/'"),
        ("/", "'/'"),
        ("..", 'must not start with "."'),
        (".", 'must not start with "."'),
        (".hidden", 'must not start with "."'),
        ("a\0b", "'\\x00'"),
        ("x" * 300, "300 characters long, at most 255"),
        ("x" * (MAX_ID_LENGTH + 1), "256 characters long"),
        ("", "non-empty string"),
        ("with space", "' '"),
        ("semi;colon", "';'"),
        ("ünï", "may only contain"),
    ],
)
def test_refuses_unsafe_ids(cid: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        check_container_id(cid)
    assert '"id"' in str(info.value)
    assert fragment in str(info.value)
    assert info.value.code == 2


@pytest.mark.parametrize("cid", [None, 5, ["a"], {"id": "a"}, True])
def test_refuses_non_strings(cid: object) -> None:
    with pytest.raises(InputError, match='"id" must be a non-empty string'):
        check_container_id(cid)


def test_short_id() -> None:
    assert short_id(HEX64) == HEX64[:12]
    assert short_id("abc") == "abc"


def test_is_machine_id() -> None:
    assert is_machine_id("0123456789abcdef0123456789abcdef")
    assert not is_machine_id("0" * 32)
    assert not is_machine_id("0123456789ABCDEF0123456789ABCDEF")
    assert not is_machine_id("0123456789abcdef0123456789abcde")
    assert not is_machine_id("0123456789abcdef0123456789abcdef0")
    assert not is_machine_id("g123456789abcdef0123456789abcdef")
    assert not is_machine_id("")


def test_container_uuid_with_dashes_wins() -> None:
    uuid = "12345678-9ABC-4DEF-8123-456789ABCDEF"
    assert machine_id_for(HEX64, uuid) == "123456789abc4def8123456789abcdef"
    assert machine_id_for("not-hex", " " + uuid + "\n") == "123456789abc4def8123456789abcdef"
    assert machine_id_from_uuid(uuid) == "123456789abc4def8123456789abcdef"


@pytest.mark.parametrize("bad_uuid", ["", "nope", "0" * 32, "00000000-0000-0000-0000-000000000000", "abc", "g" * 32])
def test_invalid_container_uuid_is_ignored(bad_uuid: str) -> None:
    assert machine_id_for(HEX64, bad_uuid) == HEX64[:32]
    if bad_uuid:
        assert machine_id_from_uuid(bad_uuid) is None


def test_hex_id_gives_first_32() -> None:
    assert machine_id_for(HEX64) == HEX64[:32]
    assert machine_id_for(HEX64.upper()) == HEX64[:32]
    assert machine_id_for(HEX64[:32]) == HEX64[:32]


@pytest.mark.parametrize(
    "cid", ["mycontainer", "web-1", "x" * 40, HEX64[:31], "g" + HEX64[1:], "0" * 64, "0" * 32, "0" * 32 + "ab"]
)
def test_other_ids_are_hashed_to_a_valid_stable_machine_id(cid: str) -> None:
    mid = machine_id_for(cid)
    assert is_machine_id(mid), mid
    assert mid == machine_id_for(cid)
    assert mid != "0" * 32
    assert mid[12] == "4" and mid[16] in "89ab"  # a v4 UUID, as systemd generates
    if cid.startswith("0" * 32):
        assert not mid.startswith("0" * 32)


def test_different_inputs_give_different_machine_ids() -> None:
    ids = ["a", "b", "web-1", "web-2", "mycontainer", "mycontainer2", "0" * 64, "0" * 63 + "1"]
    mids = {machine_id_for(c) for c in ids}
    assert len(mids) == len(ids)


def test_uuid_format() -> None:
    assert uuid_format("0123456789abcdef0123456789abcdef") == "01234567-89ab-cdef-0123-456789abcdef"
    mid = machine_id_for("abc")
    formatted = uuid_format(mid)
    assert [len(p) for p in formatted.split("-")] == [8, 4, 4, 4, 12]
    assert machine_id_from_uuid(formatted) == mid


def test_the_private_sha256_equals_hashlib_on_this_interpreter() -> None:
    """_sha256 (up to 3.11) or _sha2 (3.12+): tests/test_pythons.py runs this under each CPython."""
    import hashlib

    from oci_systemd_hook.ids import _sha256_hex

    for data in (b"", b"web1", "é".encode(), bytes(range(256)) * 40):
        assert _sha256_hex(data) == hashlib.sha256(data).hexdigest()
