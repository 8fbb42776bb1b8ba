"""The OCI state a runtime writes on the hook's stdin."""

from __future__ import annotations

import os

from oci_systemd_hook import jsonlite
from oci_systemd_hook.errors import InputError
from oci_systemd_hook.ids import check_container_id

MAX_STATE_BYTES = 1 << 20


class State:
    """The fields of the OCI state the hook uses, checked."""

    __slots__ = ("id", "pid", "bundle", "status", "annotations", "version")

    def __init__(
        self,
        id: str,
        bundle: str,
        pid: int | None = None,
        status: str = "",
        annotations: dict[str, str] | None = None,
        version: str = "",
    ) -> None:
        self.id = id
        self.bundle = bundle
        self.pid = pid
        self.status = status
        self.annotations = annotations or {}
        self.version = version


def read_state(stream: object) -> State:
    """Read and parse the state from a binary stream (normally stdin)."""
    if stream is None:
        raise InputError("no OCI state on stdin: stdin is closed (the runtime passes the state there)")
    try:
        raw = stream.read(MAX_STATE_BYTES + 1)  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # closed, or not a binary stream
        raise InputError("no OCI state on stdin: stdin is closed (the runtime passes the state there)") from None
    except OSError as exc:
        raise InputError(f"cannot read the OCI state from stdin: {exc.strerror}") from None
    if raw is None:
        raw = b""
    if len(raw) > MAX_STATE_BYTES:
        raise InputError(f"the OCI state on stdin is larger than {MAX_STATE_BYTES // 1024} KiB")
    return parse_state(raw)


def encodable(path: str) -> bool:
    """Can `path` name a file? (JSON may carry lone surrogates, which no file name has.)"""
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _type_name(value: object) -> str:
    return {str: "a string", int: "an integer", bool: "a boolean", list: "an array",
            dict: "an object", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def parse_state(raw: bytes | str) -> State:
    """Check the state: each problem names the field and what was expected."""
    if not raw.strip():
        raise InputError("no OCI state on stdin (expected a JSON object from the runtime)")
    try:
        obj = jsonlite.loads(raw)
    except ValueError as exc:
        raise InputError(f"the OCI state on stdin is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f"the OCI state must be a JSON object, got {_type_name(obj)}")
    try:
        return _check_state(obj)
    except InputError as exc:
        from oci_systemd_hook.schema import STATE_SCHEMA, explain  # the error path only

        raise InputError(explain(obj, STATE_SCHEMA, "state", exc.message)) from None


def _check_state(obj: dict[str, object]) -> State:
    """The cheap checks that decide; schema.explain words the refusal."""
    cid = check_container_id(obj.get("id"))

    pid = obj.get("pid")
    if pid is not None:
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise InputError(f'state: "pid" must be an integer, got {_type_name(pid)}')
        if pid < 0 or pid > 1 << 22:
            raise InputError(f'state: "pid" {pid} is not a valid process id')
        if pid == 0:  # some runtimes send 0 once the container is gone
            pid = None

    bundle = obj.get("bundle", obj.get("bundlePath"))
    if bundle is None:
        raise InputError('state: "bundle" is missing (expected the bundle directory\'s path)')
    if not isinstance(bundle, str) or not bundle:
        raise InputError(f'state: "bundle" must be a non-empty string, got {_type_name(bundle)}')
    if "\0" in bundle or not os.path.isabs(bundle) or not encodable(bundle):
        raise InputError(f'state: "bundle" must be an absolute path, got {bundle[:200]!r}')

    status = obj.get("status", "")
    if not isinstance(status, str):
        raise InputError(f'state: "status" must be a string, got {_type_name(status)}')

    annotations = obj.get("annotations")
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise InputError('state: "annotations" must be an object of strings')

    version = obj.get("ociVersion", "")
    if not isinstance(version, str):
        raise InputError(f'state: "ociVersion" must be a string, got {_type_name(version)}')
    return State(cid, os.path.normpath(bundle), pid, status, annotations, version)  # type: ignore[arg-type]
