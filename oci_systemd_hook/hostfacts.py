"""What the host and the container's namespaces look like right now.

The parsers are pure (text in, values out) so the planner can be tested on
recorded tables; `gather` is the only part that reads /proc.
"""

from __future__ import annotations

import os

from oci_systemd_hook.errors import HookError, InputError


class MountInfo:
    """One line of /proc/PID/mountinfo."""

    __slots__ = ("mount_id", "parent_id", "root", "mountpoint", "options", "fstype", "source", "super_options",
                 "shared")

    def __init__(self, mount_id: int, parent_id: int, root: str, mountpoint: str, options: str,
                 fstype: str, source: str, super_options: str, shared: bool = False) -> None:
        self.mount_id = mount_id
        self.parent_id = parent_id
        self.root = root
        self.mountpoint = mountpoint
        self.options = options
        self.fstype = fstype
        self.source = source
        self.super_options = super_options
        self.shared = shared  # in a peer group ("shared:N"): mounts below it propagate to its peers

    def option_set(self) -> set[str]:
        return set(self.options.split(",")) | set(self.super_options.split(","))


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountInfo]:
    """Every well-formed line of a mountinfo text. Every prestart parses the host's, which
    grows with the containers that run (each has its unix-export tmpfs there): kept lean."""
    entries: list[MountInfo] = []
    append = entries.append
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            root, mountpoint, source = fields[3], fields[4], fields[sep + 2]
            if "\\" in line:
                root, mountpoint, source = _unescape(root), _unescape(mountpoint), _unescape(source)
            append(MountInfo(int(fields[0]), int(fields[1]), root, mountpoint, fields[5], fields[sep + 1], source,
                             fields[sep + 3] if len(fields) > sep + 3 else "",
                             sep > 6 and "shared:" in " ".join(fields[6:sep])))  # the optional fields
        except (ValueError, IndexError):
            continue
    return entries


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map each hierarchy to the process's path in it.

    Keys are the controller list as written (`memory`, `cpu,cpuacct`,
    `name=systemd`) and each controller on its own; the cgroup2 line is "".
    """
    result: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        result[controllers] = path
        for name in controllers.split(","):
            if name:
                result[name] = path
    return result


def below(path: str, parent: str) -> str | None:
    """`path` relative to `parent` ("" if equal), or None if it is not below it."""
    if parent == "/":
        return path.lstrip("/") if path.startswith("/") else None
    if path == parent:
        return ""
    if path.startswith(parent + "/"):
        return path[len(parent) + 1:]
    return None


def is_hidden(mounts: list[MountInfo], index: int, by_id: dict[int, MountInfo] | None = None) -> bool:
    """Is mounts[index] hidden by a later mount on it or on one of its parent directories?

    (A cgroup2 mounted on /sys/fs/cgroup hides the hybrid layout's /sys/fs/cgroup/unified,
    which mountinfo still lists.)
    """
    if by_id is None:
        by_id = {m.mount_id: m for m in mounts}
    m = mounts[index]
    ancestors: set[int] = set()
    parent = by_id.get(m.parent_id)
    while parent is not None and parent.mount_id not in ancestors:
        ancestors.add(parent.mount_id)
        parent = by_id.get(parent.parent_id)
    return any(below(m.mountpoint, later.mountpoint) is not None and later.mount_id not in ancestors
               for later in mounts[index + 1:])


def find_cgroup_mount(mounts: list[MountInfo], v1_name: str | None) -> MountInfo | None:
    """The reachable host mount of a cgroup hierarchy (cgroup2 if v1_name is None) rooted highest."""
    best = None
    by_id: dict[int, MountInfo] | None = None
    for i, m in enumerate(mounts):
        if v1_name is None:
            ok = m.fstype == "cgroup2"
        else:
            ok = m.fstype == "cgroup" and v1_name in m.super_options.split(",")
        if not ok or (best is not None and len(m.root) >= len(best.root)):
            continue
        if by_id is None:
            by_id = {x.mount_id: x for x in mounts}
        if not is_hidden(mounts, i, by_id):
            best = m
    return best


def cgroup_host_dir(mounts: list[MountInfo], v1_name: str | None, path: str) -> str | None:
    """Where cgroup `path` of a hierarchy is reachable in the hook's mount namespace."""
    m = find_cgroup_mount(mounts, v1_name)
    if m is None:
        return None
    rel = below(path, m.root)
    if rel is None:
        return None
    return os.path.join(m.mountpoint, rel) if rel else m.mountpoint


class HostFacts:
    """Everything the planner needs besides the spec and the settings."""

    def __init__(self) -> None:
        self.cgroups: dict[str, str] = {}  # the container's /proc/PID/cgroup
        self.host_mounts: list[MountInfo] = []  # the hook's own mount namespace
        self.container_mounts: list[MountInfo] = []  # the container's mount namespace
        self.guest_systemd: int | None = None  # the image's systemd version, when it was needed and read
        self.memory_limit: int | None = None
        self.ram = 0
        self.selinux = False
        self.os_release = ""  # host path of the host's os-release, "" if none
        self.journal_root_exists = False
        self.mount_label_valid: bool | None = None  # what the SELinux policy says of linux.mountLabel
        self.host_machine_id = ""  # the host's own /etc/machine-id
        self.mid_claims: dict[str, str] = {}  # machine id -> live container id holding it
        #: machine id -> owner of <journal-root>/<mid>: a container id, "" (not the hook's);
        #: absent when nothing is there. Filled for the candidate ids only.
        self.journal_owners: dict[str, str] = {}

    @property
    def known(self) -> bool:
        """False when facts come without a live container (plan without a pid)."""
        return bool(self.container_mounts)


def _read(path: str, limit: int = 4 << 20) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        chunks = []
        size = 0
        while size < limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks).decode("utf-8", "surrogateescape")
    finally:
        os.close(fd)


def _memory_limit(facts: HostFacts) -> int | None:
    candidates = []
    v1 = facts.cgroups.get("memory")
    if v1 is not None:
        d = cgroup_host_dir(facts.host_mounts, "memory", v1)
        if d:
            candidates.append(os.path.join(d, "memory.limit_in_bytes"))
    v2 = facts.cgroups.get("")
    if v2 is not None:
        d = cgroup_host_dir(facts.host_mounts, None, v2)
        if d:
            candidates.append(os.path.join(d, "memory.max"))
    for path in candidates:
        try:
            text = _read(path, 64).strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def selinux_enabled() -> bool:
    from oci_systemd_hook import labels

    return labels.enabled()


def host_os_release() -> str:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        if os.path.isfile(path):
            return path
    return ""


def host_machine_id() -> str:
    try:
        return _read("/etc/machine-id", 64).strip()
    except OSError:
        return ""


def gather(pid: int | None, journal_root: str, state_root: str = "", candidates: tuple[str, ...] = (),
           mount_label: str = "") -> HostFacts:
    """Read the facts for a live container, or only the host's when pid is None.

    `candidates` are the machine ids the container might get: who holds them (a live
    container, a journal directory) is read for those only.
    """
    facts = HostFacts()
    facts.journal_root_exists = os.path.isdir(journal_root)
    facts.host_machine_id = host_machine_id()
    if state_root:
        from oci_systemd_hook.registry import journal_owner, mid_claims

        facts.mid_claims = mid_claims(state_root)
        if facts.journal_root_exists:
            for mid in candidates:
                owner = journal_owner(journal_root, mid)
                if owner is not None:
                    facts.journal_owners[mid] = owner
    facts.host_mounts = parse_mountinfo(_read("/proc/self/mountinfo"))
    try:
        facts.ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        facts.ram = 0
    if mount_label:  # SELinux matters to a container with a label only: no bindings loaded otherwise
        facts.selinux = selinux_enabled()
        if facts.selinux:
            from oci_systemd_hook import labels

            facts.mount_label_valid = labels.valid(mount_label)
    facts.os_release = host_os_release()
    if pid is None:
        return facts
    try:
        facts.cgroups = parse_proc_cgroup(_read(f"/proc/{pid}/cgroup"))
        facts.container_mounts = parse_mountinfo(_read(f"/proc/{pid}/mountinfo"))
    except FileNotFoundError:
        raise InputError(f"process {pid} does not exist (the container is gone?)") from None
    except OSError as exc:
        raise HookError(f"cannot read /proc/{pid}: {exc.strerror}") from None
    facts.memory_limit = _memory_limit(facts)
    return facts
