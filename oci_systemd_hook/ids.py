"""Container ids and machine ids: what may name things on the host, and what systemd accepts."""

from __future__ import annotations

from oci_systemd_hook.errors import InputError

_HEX = frozenset("0123456789abcdef")
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-")
MAX_ID_LENGTH = 255  # one path component on the host


def check_container_id(cid: object) -> str:
    """Return `cid` if it can safely name a file on the host, else raise InputError.

    runc accepts ids matching ``[\\w+.-]+``; we accept the same alphabet, refuse a
    leading dot (so neither ``.`` nor ``..`` nor hidden names) and anything longer
    than one path component may be.
    """
    if not isinstance(cid, str) or not cid:
        raise InputError('state: "id" must be a non-empty string')
    if len(cid) > MAX_ID_LENGTH:
        raise InputError(f'state: "id" is {len(cid)} characters long, at most {MAX_ID_LENGTH} are allowed')
    bad = set(cid) - _ID_CHARS
    if bad:
        shown = ", ".join(repr(c) for c in sorted(bad)[:3])
        raise InputError(f'state: "id" may only contain letters, digits and _.+-, found {shown}')
    if cid.startswith("."):
        raise InputError('state: "id" must not start with "."')
    return cid


def short_id(cid: str) -> str:
    """The 12-character form that podman and docker show."""
    return cid[:12]


def is_machine_id(value: str) -> bool:
    """systemd's rule: 32 lowercase hex digits, not all zero."""
    return len(value) == 32 and set(value) <= _HEX and value != "0" * 32


def machine_id_from_uuid(value: str) -> str | None:
    """A `container_uuid=` value (with or without dashes) as a machine id, or None."""
    candidate = value.strip().replace("-", "").lower()
    return candidate if is_machine_id(candidate) else None


def machine_id_for(cid: str, container_uuid: str | None = None) -> str:
    """The machine id the container gets.

    A valid `container_uuid` wins (that is how a manager pins it); then the first
    32 hex digits of a hex container id (podman/CRI-O ids are 64 hex digits, so
    `journalctl -M` and `machinectl` names line up with the runtime's); anything
    else is hashed, because cutting a non-hex id gives an invalid machine id
    (the C hook's bug #89).
    """
    if container_uuid:
        mid = machine_id_from_uuid(container_uuid)
        if mid:
            return mid
    lowered = cid.lower()
    if len(lowered) >= 32 and set(lowered[:32]) <= _HEX and is_machine_id(lowered[:32]):
        return lowered[:32]
    return hashed_machine_id(cid)


def _sha256_hex(data: bytes) -> str:
    """sha256 without hashlib where possible: hashlib loads OpenSSL, on the start path."""
    try:
        from _sha256 import sha256  # CPython up to 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,no-redef]  # CPython 3.12+
        except ImportError:
            from hashlib import sha256  # type: ignore[assignment]
    return str(sha256(data).hexdigest())


def hashed_machine_id(cid: str) -> str:
    """A machine id hashed from the container id, shaped like a random (v4) UUID as systemd's own."""
    digest = _sha256_hex(cid.encode("utf-8", "surrogatepass"))[:32]
    return digest[:12] + "4" + digest[13:16] + "89ab"[int(digest[16], 16) & 3] + digest[17:]


def machine_id_candidates(cid: str, container_uuid: str | None = None) -> tuple[str, ...]:
    """The ids the container may get, best first: its container_uuid, its own id, a hash of it."""
    out: list[str] = []
    if container_uuid:
        mid = machine_id_from_uuid(container_uuid)
        if mid:
            out.append(mid)
    for mid in (machine_id_for(cid), hashed_machine_id(cid)):
        if mid not in out:
            out.append(mid)
    return tuple(out)


def uuid_format(mid: str) -> str:
    """8-4-4-4-12, as systemd-nspawn writes /run/host/container-uuid."""
    return f"{mid[:8]}-{mid[8:12]}-{mid[12:16]}-{mid[16:20]}-{mid[20:]}"
