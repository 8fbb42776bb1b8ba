"""The decision: what prestart does for one container, computed without touching anything.

`build_plan` is a pure function of the state, the spec, the settings and the host
facts. The kernel layer (`apply.py`) carries a plan out; `oci-systemd-hook plan`
prints one. Paths named `target` are inside the container and are resolved
inside its rootfs only when the plan is applied.
"""

from __future__ import annotations

import os

from oci_systemd_hook.errors import HookError, InputError
from oci_systemd_hook.hostfacts import HostFacts, MountInfo, below, cgroup_host_dir, find_cgroup_mount
from oci_systemd_hook.ids import machine_id_candidates, machine_id_from_uuid, uuid_format
from oci_systemd_hook.ocistate import State
from oci_systemd_hook.registry import MID_CLAIMS, journal_data, journal_link
from oci_systemd_hook.settings import Settings, size_bytes
from oci_systemd_hook.spec import Spec

TMPFS_TARGETS = ("/run", "/run/lock", "/tmp", "/var/log/journal")
#: What copy-up copies into one tmpfs at most: the pages are written by the hook, so they count
#: against the runtime's memory, not the container's limit.
COPY_UP_MAX = 64 << 20
#: In the state directory (and below /run/host in the container): the guest's sockets for the host.
UNIX_EXPORT = "unix-export"
#: NOTIFY_SOCKET in the container's env that the hook serves (a relay records what systemd says).
NOTIFY_PATH = "/run/host/notify"
#: The source of a bind from the hook's own, detached cgroup2 mount (legacy hosts), then a path.
CGROUP2_PRIVATE = "cgroup2:"
#: Files of a cgroup directory that a delegated owner must be able to write.
CGROUP_DELEGATE_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "tasks",
                         "notify_on_release", "cgroup.clone_children")
SYSTEMD_V1 = "name=systemd"
MASK_DIR = "/run/systemd/system"
VAR_LIB_SYSTEMD = "/var/lib/systemd"


class MountStep:
    """One mount made inside the container."""

    __slots__ = ("kind", "target", "source", "data", "flags", "node", "create", "reason", "submounts", "optional",
                 "on", "dirs", "copy_up")

    def __init__(self, kind: str, target: str, source: str = "", data: list[str] | None = None,
                 flags: tuple[str, ...] = ("nosuid", "nodev"), node: str = "dir", create: bool = True,
                 reason: str = "", submounts: list[str] | None = None, optional: bool = False,
                 on: str = "root", dirs: list[str] | None = None) -> None:
        self.kind = kind  # "tmpfs", "bind", or "mask" (a runtime unit mask, not a mount)
        self.target = target
        self.source = source  # host path for a bind
        self.data = data or []  # tmpfs options
        self.flags = flags  # subset of ro, nosuid, nodev, noexec
        self.node = node  # what the target must be: "dir" or "file"
        self.create = create  # may the target be created when missing
        self.reason = reason
        self.submounts = submounts or []  # runtime mounts below target to keep on top (as planned)
        self.optional = optional  # skipped with a warning when a read-only image lacks the target
        # Where the target must lie: "root" (the container's root mount, a tmpfs of the hook's or
        # of the runtime's), "tmpfs" (one of those tmpfs only: a runtime mask must never land in
        # the image), "cgroup" (a cgroup filesystem the runtime mounted, or a tmpfs of ours),
        # "cgroup-root" (the runtime's mount at /sys/fs/cgroup) or "ours" (a mount of the hook's).
        self.on = on
        self.dirs = dirs or []  # tmpfs: directories made in it, after which it is made read-only
        self.copy_up = 0  # tmpfs: copy the image's content there into it, up to this many bytes (0: none)

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) if k != "flags" else list(self.flags) for k in self.__slots__}


class HostStep:
    """One change on the host, made before entering the container."""

    __slots__ = ("kind", "path", "mode", "content", "uid", "gid", "label", "source", "data")

    def __init__(self, kind: str, path: str, mode: int = 0o755, content: str = "", uid: int | None = None,
                 gid: int | None = None, label: str = "", source: str = "", data: list[str] | None = None) -> None:
        self.kind = kind  # mkdir, claim, write, copy, journal, chown-cgroup, cgroup2-group, notify, tmpfs
        self.path = path
        self.mode = mode
        self.content = content
        self.uid = uid
        self.gid = gid
        self.label = label
        self.source = source
        self.data = data or []  # tmpfs: its options (a small tmpfs mounted on the host, in the state directory)

    def as_dict(self) -> dict[str, object]:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["mode"] = oct(self.mode)
        return d


class Plan:
    """Everything prestart will do, in order."""

    def __init__(self, container_id: str, machine_id: str, rootfs: str, state_dir: str) -> None:
        self.container_id = container_id
        self.machine_id = machine_id
        self.rootfs = rootfs
        self.state_dir = state_dir  # this container's directory on the host
        self.journal_dir = ""  # host path of the journal (<journal-root>/<mid>, a link), "" if none
        self.journal_root = ""
        self.journal_mode = "keep"
        self.state_root = os.path.dirname(state_dir)
        self.runtime_tmpfs: list[str] = []  # config.json's own tmpfs mounts, where creating is fine
        self.host_steps: list[HostStep] = []
        self.mounts: list[MountStep] = []
        self.skipped: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.cgroup_view = ""  # "unified" or "v1" when the host is not cgroup v2; "" otherwise
        self.cgroup_view_reason = ""
        self.cgroup2_group = ""  # on a legacy host: the group the hook makes in the cgroup2 hierarchy
        #: The host's and the container's mount tables as read while planning: prestart starts
        #: from them when nothing was unmounted in between (not part of the printed plan).
        self.mounts_seen: tuple[list[MountInfo], list[MountInfo]] | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "container_id": self.container_id,
            "machine_id": self.machine_id,
            "rootfs": self.rootfs,
            "state_dir": self.state_dir,
            "journal_dir": self.journal_dir,
            "journal_mode": self.journal_mode,
            "runtime_tmpfs": list(self.runtime_tmpfs),
            "cgroup_view": self.cgroup_view,
            "cgroup_view_reason": self.cgroup_view_reason,
            "host": [s.as_dict() for s in self.host_steps],
            "mounts": [m.as_dict() for m in self.mounts],
            "skipped": [{"target": t, "reason": r} for t, r in self.skipped],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        lines = [f"container {self.container_id}", f"  machine-id {self.machine_id}",
                 f"  rootfs     {self.rootfs}", f"  state      {self.state_dir}"]
        if self.cgroup_view_reason:
            lines.append(f"  cgroups    {self.cgroup_view_reason}")
        for h in self.host_steps:
            extra = f" mode {oct(h.mode)[2:]}" if h.kind in ("mkdir", "write", "copy") else ""
            if h.uid is not None:
                extra += f" owner {h.uid}:{h.gid}"
            if h.label:
                extra += f" label {h.label}"
            src = f" from {h.source}" if h.source else ""
            if h.data:
                extra += f" [{','.join(h.data)}]"
            lines.append(f"host   {h.kind:<12} {h.path}{src}{extra}")
        for m in self.mounts:
            what = "tmpfs" if m.kind == "tmpfs" else m.source
            if m.kind == "mask":
                lines.append(f"mask   {'unit':<12} {m.target} -> {m.source}")
                continue
            opts = ",".join(list(m.flags) + m.data)
            keep = f"  (keeps {', '.join(m.submounts)} on top)" if m.submounts else ""
            if m.copy_up:
                keep += "  (copies up the image's content)"
            if m.dirs:
                keep += f"  (holds only {', '.join(m.dirs)}, then read-only)"
            lines.append(f"mount  {m.kind:<12} {m.target} <- {what} [{opts}]{keep}")
        for target, reason in self.skipped:
            lines.append(f"skip   {target}: {reason}")
        for note in self.notes:
            lines.append(f"note   {note}")
        return "\n".join(lines)


MAX_MANAGER_NAME = 64
_MANAGER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def container_manager(value: str | None) -> str:
    """What /run/host/container-manager says: the container's `container=`, when it is a name.

    The value comes from the container's environment: it must not put megabytes into the
    host's /run, nor lines or control characters into a file systemd parses.
    """
    if value and len(value) <= MAX_MANAGER_NAME and set(value) <= _MANAGER_CHARS:
        return value
    return "oci"


def tmp_size(settings: Settings, spec: Spec, facts: HostFacts) -> str:
    """Half the container's memory limit when it has one below RAM, else tmpfs' default."""
    if settings.tmp_size != "auto":
        return settings.size("tmp-size", facts.ram)
    limit = facts.memory_limit or spec.memory_limit
    if limit and facts.ram and limit < facts.ram:
        return f"{max(limit // 2 // 1024, 1024)}k"
    return ""


def _container_mount(facts: HostFacts, rootfs: str, path: str) -> MountInfo | None:
    """The topmost mount at `path` inside the container, from its mountinfo."""
    want = rootfs + path if rootfs != "/" else path
    found = None
    for m in facts.container_mounts:
        if m.mountpoint == want:
            found = m
    return found


def submounts_below(mounts: list[MountInfo], path: str) -> list[str]:
    """Outermost mount points strictly below `path`: the ones a new mount on `path` would hide."""
    inside = sorted({m.mountpoint for m in mounts if below(m.mountpoint, path)})
    outer: list[str] = []
    for p in inside:
        if not any(below(p, o) is not None for o in outer):
            outer.append(p)
    return outer


def choose_machine_id(cid: str, container_uuid: str | None, facts: HostFacts) -> tuple[str, list[str]]:
    """The container's machine id, and why better candidates were passed over.

    `container_uuid` comes from the container's environment: a tenant may aim it at
    the host's id or at another container's, whose journal directory it would then
    be given. Such an id is not honoured; the container's own id (or its hash) is
    used instead.
    """
    notes: list[str] = []
    from_uuid = machine_id_from_uuid(container_uuid) if container_uuid else None
    for mid in machine_id_candidates(cid, container_uuid):
        holder = facts.mid_claims.get(mid, cid)
        owner = facts.journal_owners.get(mid)
        why = ""
        if mid == facts.host_machine_id:
            why = "it is the host's own machine id"
        elif holder != cid:
            why = f"the live container {holder[:64]} has it"
        elif owner is not None and owner not in ("", cid):
            why = f"its journal on the host belongs to container {owner[:64]}"
        elif mid == from_uuid and owner == "":
            why = "a journal directory of that name on the host is not the hook's"
        if why:
            notes.append(f"machine id {mid} not used: {why}")
            continue
        return mid, notes
    raise InputError(f"no usable machine id for container {cid[:64]}: {'; '.join(notes)}")


def build_plan(state: State, spec: Spec, settings: Settings, facts: HostFacts, rootfs: str) -> Plan:
    """Decide every step of prestart. `rootfs` is the resolved host path of root.path."""
    mid, mid_notes = choose_machine_id(state.id, spec.env_get("container_uuid"), facts)
    plan = Plan(state.id, mid, rootfs, os.path.join(settings.state_dir, state.id))
    if state.pid is not None:
        plan.mounts_seen = (facts.host_mounts, facts.container_mounts)
    plan.notes.extend(mid_notes)
    plan.journal_mode = settings.journal
    plan.journal_root = settings.journal_root
    plan.runtime_tmpfs = [m.destination for m in spec.mounts if m.is_real_tmpfs]
    provided = spec.mount_destinations()
    uid = spec.host_id_of_root("uid")
    gid = spec.host_id_of_root("gid")
    if (uid is None) != (gid is None):
        uid = uid if uid is not None else 0
        gid = gid if gid is not None else 0
    label = spec.mount_label if facts.selinux else ""
    if label and facts.mount_label_valid is False:
        raise InputError(f"config.json: linux.mountLabel {label[:200]!r} is not a valid SELinux context "
                         "in this host's policy")
    if spec.mount_label and not facts.selinux:
        plan.notes.append("linux.mountLabel is set but SELinux is off on this host: no labels applied")
    owner_data = [f"uid={uid}", f"gid={gid}"] if uid is not None else []
    label_data = [f'context="{label}"'] if label else []

    plan.host_steps.append(HostStep("mkdir", plan.state_dir, 0o755, label=label))
    plan.host_steps.append(HostStep("claim", os.path.join(plan.state_root, MID_CLAIMS, mid)))

    # 1. tmpfs where systemd needs a writable, empty, volatile directory.
    run_size = settings.size("run-size", facts.ram)
    if run_size != settings.run_size:
        plan.notes.append(f"run-size {settings.run_size} from an annotation is above max-size "
                          f"{settings.max_size}: cut to {run_size}")
    tmp = tmp_size(settings, spec, facts)
    if settings.tmp_size not in ("auto", tmp):
        plan.notes.append(f"tmp-size {settings.tmp_size} from an annotation is above max-size "
                          f"{settings.max_size}: cut to {tmp}")
    sizes = {"/run": run_size, "/run/lock": run_size, "/tmp": tmp, "/var/log/journal": run_size}
    modes = {"/run": "755", "/run/lock": "755", "/tmp": "1777", "/var/log/journal": "755"}
    flags = {"/run": ("nosuid", "nodev"), "/run/lock": ("nosuid", "nodev", "noexec"), "/tmp": ("nosuid", "nodev"),
             "/var/log/journal": ("nosuid", "nodev", "noexec")}
    ours: set[str] = set()

    def foreign(path: str) -> str:
        """The config.json mount (not a tmpfs, not ours) that `path` lies in, or "".

        Such a mount is usually a host directory: creating a mount point in it would
        write on the host, so nothing is mounted below it.
        """
        best = ""
        for m in spec.mounts:
            d = m.destination
            if d not in ("/", path) and below(path, d) is not None and len(d) > len(best):
                best = d
        if not best or best in ours:
            return ""
        holder = spec.mount_at(best)
        return "" if holder is None or holder.is_real_tmpfs else best

    for target in TMPFS_TARGETS:
        if target in provided:
            plan.skipped.append((target, "config.json already mounts it"))
            continue
        if foreign(target):
            plan.skipped.append((target, f"config.json mounts {foreign(target)} from elsewhere; "
                                         "not creating a mount point in it"))
            continue
        data = [f"mode={modes[target]}"] + ([f"size={sizes[target]}"] if sizes[target] else [])
        subs = []
        if facts.known:
            prefix = rootfs if rootfs != "/" else ""
            subs = [p[len(prefix):] for p in submounts_below(facts.container_mounts, prefix + target)]
        step = MountStep("tmpfs", target, "tmpfs", data + owner_data + label_data, flags[target],
                         reason="systemd needs it writable and empty", submounts=subs,
                         optional=target == "/var/log/journal")
        if settings.copy_up:  # the image's content there, as podman's tmpcopyup: bounded by the size
            size = size_bytes(sizes[target], facts.ram) if sizes[target] else facts.ram // 2
            step.copy_up = min(size or COPY_UP_MAX, COPY_UP_MAX)
        plan.mounts.append(step)
        ours.add(target)

    # 1b. A read-only root: units with StateDirectory= below /var/lib/systemd (systemd-logind's
    # systemd/linger, missing in a fresh image) fail with 238/STATE_DIRECTORY when systemd cannot
    # create it. Give systemd a volatile /var/lib/systemd, as for /run; the image stays untouched.
    if spec.readonly:
        if VAR_LIB_SYSTEMD in provided:
            plan.skipped.append((VAR_LIB_SYSTEMD, "config.json already mounts it"))
        elif foreign(VAR_LIB_SYSTEMD):
            plan.skipped.append((VAR_LIB_SYSTEMD, f"config.json mounts {foreign(VAR_LIB_SYSTEMD)} from elsewhere; "
                                                  "not creating a mount point in it"))
        else:
            data = ["mode=755", f"size={run_size}"]
            step = MountStep("tmpfs", VAR_LIB_SYSTEMD, "tmpfs", data + owner_data + label_data,
                             ("nosuid", "nodev", "noexec"),
                             reason="read-only root: systemd's StateDirectory= paths must be creatable")
            if settings.copy_up:  # the image's catalog database and the rest stay visible
                step.copy_up = min(size_bytes(run_size, facts.ram) or COPY_UP_MAX, COPY_UP_MAX)
            plan.mounts.append(step)
            ours.add(VAR_LIB_SYSTEMD)

    def writable_tmpfs(path: str) -> bool:
        """May we create a mount point below `path`: is it a tmpfs of ours or of the runtime's?"""
        if path in ours:
            return True
        m = spec.mount_at(path)
        return m is not None and m.is_real_tmpfs

    # 2. systemd's container interface under /run/host.
    host_dir = os.path.join(plan.state_dir, "host")
    if "/run/host" in provided:
        plan.skipped.append(("/run/host", "config.json already mounts it"))
    elif foreign("/run/host"):
        plan.skipped.append(("/run/host", f"config.json mounts {foreign('/run/host')} from elsewhere; "
                                          "not creating a mount point in it"))
    else:
        manager = container_manager(spec.env_get("container"))
        if manager != (spec.env_get("container") or "oci"):
            plan.notes.append("process.env container= is not a manager name (letters, digits, ._-, at most "
                              f"{MAX_MANAGER_NAME}): /run/host/container-manager says {manager}")
        plan.host_steps.append(HostStep("mkdir", host_dir, 0o755, label=label))
        plan.host_steps.append(HostStep("write", os.path.join(host_dir, "container-manager"), 0o444, manager + "\n"))
        plan.host_steps.append(HostStep("write", os.path.join(host_dir, "container-uuid"), 0o444,
                                        uuid_format(mid) + "\n"))
        if facts.os_release:
            plan.host_steps.append(HostStep("copy", os.path.join(host_dir, "os-release"), 0o444,
                                            source=facts.os_release))
        plan.mounts.append(MountStep("bind", "/run/host", host_dir, flags=("ro", "nosuid", "nodev", "noexec"),
                                     reason="systemd's container interface (container-manager, os-release, uuid)"))
        if spec.env_get("NOTIFY_SOCKET") == NOTIFY_PATH:
            # systemd's readiness for `status`/`wait`: a relay's socket, bound over a file here.
            plan.host_steps.append(HostStep("write", os.path.join(host_dir, "notify"), 0o444, ""))
            plan.host_steps.append(HostStep("notify", plan.state_dir, uid=uid if uid is not None else 0,
                                            gid=gid if gid is not None else 0))
            plan.mounts.append(MountStep("bind", NOTIFY_PATH, os.path.join(plan.state_dir, "notify"),
                                         flags=("nosuid", "nodev", "noexec"), node="file", create=False, on="ours",
                                         reason="NOTIFY_SOCKET: what systemd says while it boots, for status/wait"))
        # Sockets the guest offers the host (systemd-ssh-generator binds sshd there): a host-side
        # directory next to the record, which the host reaches with no network at all. It is a
        # small tmpfs of its own, so that a container cannot fill the host's /run through it,
        # mode 0700 and the container root's: only root and that user may enter it.
        export_dir = os.path.join(plan.state_dir, UNIX_EXPORT)
        plan.host_steps.append(HostStep("mkdir", os.path.join(host_dir, UNIX_EXPORT), 0o755, label=label))
        plan.host_steps.append(HostStep("mkdir", export_dir, 0o700))
        plan.host_steps.append(HostStep("tmpfs", export_dir, data=["mode=700", "size=1m", "nr_inodes=1k",
                                                                   *owner_data, *label_data]))
        plan.mounts.append(MountStep("bind", "/run/host/" + UNIX_EXPORT, export_dir,
                                     flags=("nosuid", "nodev", "noexec"), create=False, on="ours",
                                     reason="systemd's container interface: sockets for the host (ssh)"))

    # 3. A valid machine id, without writing the image's /etc/machine-id.
    if "/etc/machine-id" in provided:
        plan.skipped.append(("/etc/machine-id", "config.json already mounts it"))
    elif foreign("/etc/machine-id"):
        plan.skipped.append(("/etc/machine-id", f"config.json mounts {foreign('/etc/machine-id')} from elsewhere"))
    else:
        mid_file = os.path.join(plan.state_dir, "machine-id")
        plan.host_steps.append(HostStep("write", mid_file, 0o444, mid + "\n", label=label))
        plan.mounts.append(MountStep("bind", "/etc/machine-id", mid_file, flags=("ro", "nosuid", "nodev", "noexec"),
                                     node="file", reason="a valid machine id derived from the container"))
        # With /etc/machine-id a mount point, systemd-machine-id-commit.service would try to
        # unmount it and write the id into the image (and fail without CAP_SYS_ADMIN). Mask it
        # for this boot only, as `systemctl mask --runtime` does, in the /run we just made.
        if writable_tmpfs("/run"):
            plan.mounts.append(MountStep("mask", MASK_DIR + "/systemd-machine-id-commit.service", "/dev/null",
                                         data=owner_data, flags=(), node="symlink", on="tmpfs", optional=True,
                                         reason="the machine id is the container's: never commit it to the image"))

    # 4. The journal, linked to the host like systemd-nspawn --link-journal=host.
    if settings.journal == "off":
        plan.skipped.append(("/var/log/journal/" + mid, "journal linking is off"))
    elif not facts.journal_root_exists:
        plan.skipped.append(("/var/log/journal/" + mid, f"the host has no {settings.journal_root}"))
    elif ("/var/log/journal" in provided and not writable_tmpfs("/var/log/journal")) or foreign(
            "/var/log/journal/" + mid):
        plan.skipped.append(("/var/log/journal/" + mid, "config.json mounts /var/log/journal from elsewhere"))
    elif facts.journal_owners.get(mid, state.id) != state.id:
        plan.skipped.append(("/var/log/journal/" + mid, f"{journal_link(settings.journal_root, mid)} on the host "
                                                        "is not this container's (the host's own, or another's)"))
    else:
        # The writable directory lives in a store only root may enter: container root can make
        # setuid files and devices in it, which no host user must be able to reach.
        plan.journal_dir = journal_link(settings.journal_root, mid)
        data_dir = journal_data(settings.journal_root, mid)
        plan.host_steps.append(HostStep("journal", data_dir, 0o755, uid=uid, gid=gid, label=label))
        plan.mounts.append(MountStep("bind", "/var/log/journal/" + mid, data_dir,
                                     flags=("nosuid", "nodev", "noexec"), optional=True,
                                     reason="the container's journal, readable on the host with journalctl -D"))

    # 5. The container's own cgroup, writable; nothing above it.
    _plan_cgroups(plan, spec, settings, facts, rootfs, uid, gid)
    return plan


def _own_cgroup_steps(plan: Plan, host_dir: str, target: str, uid: int | None, gid: int | None) -> None:
    if uid is not None:
        plan.host_steps.append(HostStep("chown-cgroup", host_dir, uid=uid, gid=gid))
    plan.mounts.append(MountStep("bind", target, host_dir, flags=("nosuid", "nodev", "noexec"), create=False,
                                 on="cgroup", reason="the container's own cgroup, writable for systemd"))


def _hide_siblings(plan: Plan, base: str, rel: str) -> None:
    """Without a cgroup namespace systemd needs its cgroup at its full path below `base`, and the
    whole hierarchy would show every other container's group on the way. A read-only tmpfs over
    the first directory of the path holds only the chain down to the container's own group."""
    first, _, rest = rel.partition("/")
    if not rest:
        return  # directly below the top: only top-level names are visible
    plan.mounts.append(MountStep("tmpfs", f"{base}/{first}", "tmpfs", ["mode=755", "size=1m", "nr_inodes=4k"],
                                 ("nosuid", "nodev", "noexec"), create=False, on="cgroup", dirs=[rest],
                                 reason="hides the groups of other containers next to the container's own"))


def _plan_cgroups(plan: Plan, spec: Spec, settings: Settings, facts: HostFacts, rootfs: str, uid: int | None,
                  gid: int | None) -> None:
    if not facts.known:
        plan.notes.append("cgroups are decided from the live container's mount table (no pid given)")
        return
    top = _container_mount(facts, rootfs, "/sys/fs/cgroup")
    if top is None:
        plan.notes.append("the container has no cgroup filesystem at /sys/fs/cgroup: left as the runtime made it")
        return
    if top.fstype == "cgroup2":
        _plan_cgroup2(plan, facts, top, "/sys/fs/cgroup", uid, gid, required=True)
        return
    from oci_systemd_hook.cgroupview import choose, host_layout

    layout = host_layout(facts.host_mounts)
    view, why = choose(settings.cgroup_view, layout, facts.guest_systemd)
    plan.cgroup_view = view
    plan.cgroup_view_reason = f"{'cgroup2' if view == 'unified' else 'cgroup v1'} on a {layout} host: {why}"
    if view == "unified":
        _plan_unified_view(plan, spec, facts, layout, uid, gid)
        return
    # cgroup v1 (runc's layout: a tmpfs holding one mount per hierarchy).
    path = facts.cgroups.get(SYSTEMD_V1)
    hierarchy = find_cgroup_mount(facts.host_mounts, SYSTEMD_V1)
    if path is None or hierarchy is None:
        plan.notes.append("no name=systemd cgroup hierarchy on this host or for this container")
    else:
        own = cgroup_host_dir(facts.host_mounts, SYSTEMD_V1, path)
        rel = below(path, hierarchy.root)
        if own is None or not rel:
            raise HookError(f"the container's name=systemd cgroup {path} is the hierarchy's root or not "
                            "reachable; refusing to make it writable")
        if "cgroup" in spec.namespaces:
            _own_cgroup_steps(plan, own, "/sys/fs/cgroup/systemd", uid, gid)
        else:
            plan.mounts.append(MountStep("bind", "/sys/fs/cgroup/systemd", hierarchy.mountpoint,
                                         flags=("ro", "nosuid", "nodev", "noexec"), create=False, on="cgroup",
                                         reason="the name=systemd hierarchy, read-only: the container's path exists"))
            _hide_siblings(plan, "/sys/fs/cgroup/systemd", rel)
            _own_cgroup_steps(plan, own, "/sys/fs/cgroup/systemd/" + rel, uid, gid)
    unified = _container_mount(facts, rootfs, "/sys/fs/cgroup/unified")
    if unified is not None and unified.fstype == "cgroup2":
        _plan_cgroup2(plan, facts, unified, "/sys/fs/cgroup/unified", uid, gid, required=False)


def _plan_unified_view(plan: Plan, spec: Spec, facts: HostFacts, layout: str, uid: int | None,
                       gid: int | None) -> None:
    """A cgroup2 view at /sys/fs/cgroup for a container on a hybrid or legacy (v1) host.

    The bind onto /sys/fs/cgroup lands on the runtime's own mount there (`on="cgroup-root"`);
    what follows lies on that bind. Without a cgroup namespace (and always on a legacy host,
    where the container's namespace was made at the hierarchy's root): the hierarchy's root
    read-only, the groups next to the container's hidden, its own group writable at its
    full path. With one on a hybrid host: its own group as the root of the view.
    """
    from oci_systemd_hook.cgroupview import unified_mount

    if layout == "hybrid":
        path = facts.cgroups.get("")
        host = unified_mount(facts.host_mounts)
        if path is None or path == "/" or host is None:
            raise HookError("the container has no cgroup2 group of its own on this hybrid host: cannot give it a "
                            "cgroup2 view (try --cgroup-view=v1)")
        own = cgroup_host_dir(facts.host_mounts, None, path)
        if own is None:
            raise HookError("the host's cgroup2 hierarchy is not mounted where the hook can reach it")
        rel = path.strip("/")
        if "cgroup" in spec.namespaces:
            if uid is not None:
                plan.host_steps.append(HostStep("chown-cgroup", own, uid=uid, gid=gid))
            plan.mounts.append(MountStep("bind", "/sys/fs/cgroup", own, flags=("nosuid", "nodev", "noexec"),
                                         create=False, on="cgroup-root",
                                         reason="cgroup2 view: the container's own group, writable"))
            return
        root_source = host.mountpoint
        own_source = own
    else:
        path = facts.cgroups.get(SYSTEMD_V1) or ""
        rel = path.strip("/")
        if not rel:
            raise HookError("the container has no cgroup of its own on this host (name=systemd): cannot make it a "
                            "cgroup2 group (try --cgroup-view=v1)")
        # The container's group, made on a cgroup2 mount of the hook's own (never attached to the host).
        plan.host_steps.append(HostStep("cgroup2-group", rel, uid=uid, gid=gid))
        plan.cgroup2_group = rel
        root_source = CGROUP2_PRIVATE
        own_source = CGROUP2_PRIVATE + rel
    plan.mounts.append(MountStep("bind", "/sys/fs/cgroup", root_source, flags=("ro", "nosuid", "nodev", "noexec"),
                                 create=False, on="cgroup-root",
                                 reason="cgroup2 view: the hierarchy read-only, so the container's path exists"))
    _hide_siblings(plan, "/sys/fs/cgroup", rel)
    plan.mounts.append(MountStep("bind", "/sys/fs/cgroup/" + rel, own_source, flags=("nosuid", "nodev", "noexec"),
                                 create=False, on="cgroup",
                                 reason="the container's own cgroup2 group, writable for systemd"))


def _plan_cgroup2(plan: Plan, facts: HostFacts, mount: MountInfo, base: str, uid: int | None, gid: int | None,
                  required: bool) -> None:
    path = facts.cgroups.get("")
    if path is None or path == "/":
        if required:
            raise HookError("the container is in the root cgroup2 group; refusing to make the host's root writable")
        plan.notes.append(f"the container has no cgroup2 group of its own: {base} left read-only")
        return
    rel = below(path, mount.root)
    if rel is None:
        raise HookError(f"the container's cgroup {path} is not below its {base} mount (rooted at {mount.root})")
    own = cgroup_host_dir(facts.host_mounts, None, path)
    if own is None:
        raise HookError("the host's cgroup2 hierarchy is not mounted where the hook can reach it")
    if rel:
        _hide_siblings(plan, base, rel)
    _own_cgroup_steps(plan, own, base + ("/" + rel if rel else ""), uid, gid)
