"""The parts of the bundle's config.json (the OCI runtime spec) the hook reads."""

from __future__ import annotations

import os

from oci_systemd_hook import jsonlite
from oci_systemd_hook.errors import InputError

MAX_CONFIG_BYTES = 16 << 20


class Mount:
    """One entry of `mounts`: where it goes and what it is."""

    __slots__ = ("destination", "type", "source", "options")

    def __init__(self, destination: str, type: str = "", source: str = "", options: list[str] | None = None) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options or []

    @property
    def is_real_tmpfs(self) -> bool:
        """A fresh tmpfs of the container's own. runc treats `type: tmpfs` with bind options
        as a bind of the *source*, a host directory: that is no tmpfs of the container's."""
        return self.type == "tmpfs" and not any(o in ("bind", "rbind") for o in self.options)


class IdMap:
    """One line of `linux.uidMappings`/`gidMappings`."""

    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id = container_id
        self.host_id = host_id
        self.size = size


class Spec:
    """What the hook needs to know from config.json, checked and normalised."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.env: dict[str, str] = {}
        self.root = ""  # absolute host path of the rootfs
        self.readonly = False
        self.mounts: list[Mount] = []
        self.uid_mappings: list[IdMap] = []
        self.gid_mappings: list[IdMap] = []
        self.mount_label = ""
        self.namespaces: set[str] = set()
        self.annotations: dict[str, str] = {}
        self.memory_limit: int | None = None

    def env_get(self, name: str) -> str | None:
        """The value of `name` in process.env (the last one wins, as in execve)."""
        return self.env.get(name)

    def mount_destinations(self) -> set[str]:
        return {m.destination for m in self.mounts}

    def mount_at(self, destination: str) -> Mount | None:
        for mount in reversed(self.mounts):
            if mount.destination == destination:
                return mount
        return None

    def host_id_of_root(self, which: str) -> int | None:
        """The host uid/gid that container root maps to, None without a user namespace."""
        mappings = self.uid_mappings if which == "uid" else self.gid_mappings
        for m in mappings:
            if m.container_id <= 0 < m.container_id + m.size:
                return m.host_id - m.container_id
        return None


def clean_container_path(path: str) -> str:
    """Normalise a path inside the container: absolute, no `..` tricks, no trailing slash."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def load_spec(bundle: str) -> Spec:
    """Read `<bundle>/config.json`; every problem is an InputError naming the field."""
    return parse_spec(load_config(bundle), bundle)


def load_config(bundle: str) -> object:
    """`<bundle>/config.json` as JSON: a regular file, bounded in size, never a FIFO waited on."""
    path = os.path.join(bundle, "config.json")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000):
            raise InputError(f"{path} is not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        return jsonlite.loads(b"".join(chunks))
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None


def _field(obj: dict[str, object], name: str, kind: type, where: str, default: object) -> object:
    value = obj.get(name, default)
    if value is None:
        return default
    if kind is int and isinstance(value, bool):
        raise InputError(f'config.json: "{where}{name}" must be an integer, got a boolean')
    if not isinstance(value, kind):
        from oci_systemd_hook.ocistate import _type_name

        raise InputError(f'config.json: "{where}{name}" must be {_type_name(kind())}, got {_type_name(value)}')
    return value


def _str_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f'config.json: "{where}" must be an array of strings')
    return value


def parse_spec(obj: object, bundle: str) -> Spec:
    if not isinstance(obj, dict):
        from oci_systemd_hook.ocistate import _type_name

        raise InputError(f"config.json must hold a JSON object, got {_type_name(obj)}")
    try:
        return _check_spec(obj, bundle)
    except InputError as exc:
        from oci_systemd_hook.schema import CONFIG_SCHEMA, explain  # the error path only

        raise InputError(explain(obj, CONFIG_SCHEMA, "config.json", exc.message)) from None


def _check_spec(obj: dict[str, object], bundle: str) -> Spec:
    """The cheap checks that decide; schema.explain words the refusal."""
    from oci_systemd_hook.ocistate import encodable  # the hook has it already; the runtime wrapper needs none

    spec = Spec()

    process = _field(obj, "process", dict, "", {})
    assert isinstance(process, dict)
    spec.args = _str_list(process.get("args", []), "process.args")
    for n, entry in enumerate(_str_list(process.get("env", []), "process.env")):
        if not encodable(entry):
            raise InputError(f'config.json: "process.env[{n}]" is not valid UTF-8')
        key, sep, value = entry.partition("=")
        if sep:
            spec.env[key] = value

    root = _field(obj, "root", dict, "", None)
    if root is None:
        raise InputError('config.json: "root" is missing (expected {"path": ...})')
    assert isinstance(root, dict)
    root_path = _field(root, "path", str, "root.", "")
    assert isinstance(root_path, str)
    if not root_path or "\0" in root_path or not encodable(root_path):
        raise InputError('config.json: "root.path" must be a non-empty path')
    spec.root = os.path.normpath(os.path.join(bundle, root_path))
    spec.readonly = bool(_field(root, "readonly", bool, "root.", False))

    mounts: list[object] = _field(obj, "mounts", list, "", [])  # type: ignore[assignment]
    for n, m in enumerate(mounts):
        if not isinstance(m, dict):
            raise InputError(f'config.json: "mounts[{n}]" must be an object')
        dest = m.get("destination")
        if not isinstance(dest, str) or not dest or "\0" in dest or not encodable(dest):
            raise InputError(f'config.json: "mounts[{n}].destination" must be a non-empty string')
        mtype = _field(m, "type", str, f"mounts[{n}].", "")
        source = _field(m, "source", str, f"mounts[{n}].", "")
        options = _str_list(m.get("options") or [], f"mounts[{n}].options")
        spec.mounts.append(Mount(clean_container_path(dest), mtype, source, options))  # type: ignore[arg-type]

    linux = _field(obj, "linux", dict, "", {})
    assert isinstance(linux, dict)
    for key, target in (("uidMappings", spec.uid_mappings), ("gidMappings", spec.gid_mappings)):
        entries: list[object] = _field(linux, key, list, "linux.", [])  # type: ignore[assignment]
        for n, m in enumerate(entries):
            where = f"linux.{key}[{n}]."
            if not isinstance(m, dict):
                raise InputError(f'config.json: "linux.{key}[{n}]" must be an object')
            ids = [_field(m, f, int, where, None) for f in ("containerID", "hostID", "size")]
            if any(i is None or i < 0 for i in ids):  # type: ignore[operator]
                raise InputError(f'config.json: "linux.{key}[{n}]" needs non-negative containerID, hostID and size')
            target.append(IdMap(*ids))  # type: ignore[arg-type]
    spec.mount_label = _field(linux, "mountLabel", str, "linux.", "")  # type: ignore[assignment]
    namespaces: list[object] = _field(linux, "namespaces", list, "linux.", [])  # type: ignore[assignment]
    for n, ns in enumerate(namespaces):
        if not isinstance(ns, dict) or not isinstance(ns.get("type"), str):
            raise InputError(f'config.json: "linux.namespaces[{n}].type" must be a string')
        spec.namespaces.add(ns["type"])
    resources = _field(linux, "resources", dict, "linux.", {})
    assert isinstance(resources, dict)
    memory = _field(resources, "memory", dict, "linux.resources.", {})
    assert isinstance(memory, dict)
    limit = _field(memory, "limit", int, "linux.resources.memory.", None)
    spec.memory_limit = limit if isinstance(limit, int) and limit > 0 else None

    annotations = _field(obj, "annotations", dict, "", {})
    assert isinstance(annotations, dict)
    if not all(isinstance(v, str) for v in annotations.values()):
        raise InputError('config.json: "annotations" must be an object of strings')
    spec.annotations = annotations
    return spec
