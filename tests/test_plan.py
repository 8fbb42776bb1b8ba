"""build_plan on hand-made states, specs, settings and recorded mount tables."""

from __future__ import annotations

from typing import Any

import pytest

from oci_systemd_hook import jsonlite
from oci_systemd_hook.errors import HookError, InputError
from oci_systemd_hook.hostfacts import HostFacts, parse_mountinfo, parse_proc_cgroup
from oci_systemd_hook.ids import machine_id_for, uuid_format
from oci_systemd_hook.ocistate import State
from oci_systemd_hook.plan import Plan, build_plan, submounts_below, tmp_size
from oci_systemd_hook.settings import Settings
from oci_systemd_hook.spec import Spec, parse_spec

CID = "3f2a9c1be0d447a8b6e5f4c3d2a1b0c98f7e6d5c4b3a29180716253443526170"
MID = CID[:32]
BUNDLE = "/var/lib/c1"
R = "/var/lib/c1/rootfs"
STATE = "/srv/state/" + CID
JROOT = "/srv/journal"
GIB = 1 << 30
NODEV = ("nosuid", "nodev")
NOEXEC = ("nosuid", "nodev", "noexec")
RO = ("ro", "nosuid", "nodev", "noexec")

HYBRID_HOST = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

V2_HOST = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/root rw
25 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:3 - cgroup2 cgroup2 rw,nsdelegate
"""

V1_PATH = "/user.slice/c1"
V2_PATH = "/machine.slice/libpod-c1.scope"


def container_mounts(*extra: str) -> str:
    """The container's mount table before pivot_root: everything under the rootfs' host path."""
    base = [
        f"200 150 254:0 {R} {R} rw,relatime - ext4 /dev/vda rw",
        f"201 200 0:70 / {R}/proc rw,nosuid,nodev,noexec - proc proc rw",
        f"202 200 0:71 / {R}/dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755",
        f"203 200 0:72 / {R}/sys ro,nosuid,nodev,noexec - sysfs sysfs ro",
    ]
    return "\n".join(base + list(extra)) + "\n"


V1_RUNC = container_mounts(
    f"204 203 0:73 / {R}/sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs rw,mode=755",
    f"205 204 0:29 {V1_PATH} {R}/sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu",
    f"206 204 0:32 {V1_PATH} {R}/sys/fs/cgroup/memory ro - cgroup cgroup rw,memory",
    f"207 204 0:37 {V1_PATH} {R}/sys/fs/cgroup/systemd ro - cgroup cgroup rw,name=systemd",
)
V1_CGROUP = f"9:name=systemd:{V1_PATH}\n4:memory:{V1_PATH}\n1:cpu:{V1_PATH}\n0::/\n"


def make_spec(**overrides: Any) -> Spec:
    obj: dict[str, Any] = {
        "process": {"args": ["/sbin/init"], "env": ["PATH=/usr/bin"]},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc"}, {"destination": "/dev", "type": "tmpfs"},
                   {"destination": "/sys", "type": "sysfs"}, {"destination": "/sys/fs/cgroup", "type": "cgroup"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
    }
    obj.update(overrides)
    return parse_spec(obj, BUNDLE)


def make_facts(host: str = HYBRID_HOST, cgroup: str = V1_CGROUP, mounts: str = V1_RUNC, **attrs: Any) -> HostFacts:
    facts = HostFacts()
    facts.host_mounts = parse_mountinfo(host)
    facts.cgroups = parse_proc_cgroup(cgroup)
    facts.container_mounts = parse_mountinfo(mounts)
    facts.ram = 8 * GIB
    facts.os_release = "/etc/os-release"
    facts.journal_root_exists = True
    facts.guest_systemd = 252  # Debian 12, the image of the samples: v1 on a v1 host
    for key, value in attrs.items():
        setattr(facts, key, value)
    return facts


def make_settings(**knobs: str) -> Settings:
    s = Settings()
    s.set("state-dir", "/srv/state", "test")
    s.set("journal-root", JROOT, "test")
    for name, value in knobs.items():
        s.set(name.replace("_", "-"), value, "test")
    return s


def plan_for(spec: Spec | None = None, facts: HostFacts | None = None, settings: Settings | None = None,
             cid: str = CID) -> Plan:
    return build_plan(State(cid, BUNDLE, 4242, "creating"), spec or make_spec(), settings or make_settings(),
                      facts or make_facts(), R)


def mounts_of(plan: Plan) -> list[tuple[Any, ...]]:
    return [(m.kind, m.target, m.source, m.data, m.flags) for m in plan.mounts]


def host_of(plan: Plan) -> list[tuple[Any, ...]]:
    return [(h.kind, h.path, h.mode, h.content, h.uid, h.gid, h.label, h.source) for h in plan.host_steps]


def tmpfs_mounts(tmp: list[str] | None = None, extra: list[str] | None = None) -> list[tuple[Any, ...]]:
    extra = extra or []
    return [
        ("tmpfs", "/run", "tmpfs", ["mode=755", "size=64m", *extra], NODEV),
        ("tmpfs", "/run/lock", "tmpfs", ["mode=755", "size=64m", *extra], NOEXEC),
        ("tmpfs", "/tmp", "tmpfs", ["mode=1777", *(tmp or []), *extra], NODEV),
        ("tmpfs", "/var/log/journal", "tmpfs", ["mode=755", "size=64m", *extra], NOEXEC),
    ]


#: The read-only tmpfs that hides the groups next to the container's own (V1_PATH: /user.slice/c1).
HIDE_V1 = ("tmpfs", "/sys/fs/cgroup/systemd/user.slice", "tmpfs", ["mode=755", "size=1m", "nr_inodes=4k"], NOEXEC)
MASK = ("mask", "/run/systemd/system/systemd-machine-id-commit.service", "/dev/null", [], ())


def interface_mounts(mid: str = MID) -> list[tuple[Any, ...]]:
    return [
        ("bind", "/run/host", STATE + "/host", [], RO),
        ("bind", "/run/host/unix-export", STATE + "/unix-export", [], NOEXEC),
        ("bind", "/etc/machine-id", STATE + "/machine-id", [], RO),
        MASK,
        ("bind", "/var/log/journal/" + mid, JROOT + "/.oci-systemd-hook/" + mid, [], NOEXEC),
    ]


def default_host_steps(mid: str = MID, manager: str = "oci", uid: int | None = None) -> list[tuple[Any, ...]]:
    return [
        ("mkdir", STATE, 0o755, "", None, None, "", ""),
        ("claim", "/srv/state/.machine-ids/" + mid, 0o755, "", None, None, "", ""),
        ("mkdir", STATE + "/host", 0o755, "", None, None, "", ""),
        ("write", STATE + "/host/container-manager", 0o444, manager + "\n", None, None, "", ""),
        ("write", STATE + "/host/container-uuid", 0o444, uuid_format(mid) + "\n", None, None, "", ""),
        ("copy", STATE + "/host/os-release", 0o444, "", None, None, "", "/etc/os-release"),
        ("mkdir", STATE + "/host/unix-export", 0o755, "", None, None, "", ""),
        ("mkdir", STATE + "/unix-export", 0o700, "", None, None, "", ""),
        ("tmpfs", STATE + "/unix-export", 0o755, "", None, None, "", ""),
        ("write", STATE + "/machine-id", 0o444, mid + "\n", None, None, "", ""),
        ("journal", JROOT + "/.oci-systemd-hook/" + mid, 0o755, "", uid, uid, "", ""),
    ]


def test_plain_v1_runc_layout() -> None:
    plan = plan_for()
    assert (plan.container_id, plan.machine_id, plan.rootfs, plan.state_dir) == (CID, MID, R, STATE)
    assert plan.journal_dir == JROOT + "/" + MID
    assert plan.journal_mode == "keep"
    assert mounts_of(plan) == tmpfs_mounts() + interface_mounts() + [
        ("bind", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/systemd", [], RO),
        HIDE_V1,
        ("bind", "/sys/fs/cgroup/systemd" + V1_PATH, "/sys/fs/cgroup/systemd" + V1_PATH, [], NOEXEC),
    ]
    assert plan.mounts[-2].dirs == ["c1"] and plan.mounts[-2].on == "cgroup"
    assert host_of(plan) == default_host_steps()
    assert [h.data for h in plan.host_steps if h.kind == "tmpfs"] == [["mode=700", "size=1m", "nr_inodes=1k"]]
    assert plan.skipped == []
    assert plan.notes == []
    by_target = {m.target: m for m in plan.mounts}
    assert by_target["/etc/machine-id"].node == "file"
    assert by_target[MASK[1]].node == "symlink"
    assert all(m.node == "dir" for t, m in by_target.items() if t not in ("/etc/machine-id", MASK[1]))
    assert [t for t, m in by_target.items() if not m.create] == ["/run/host/unix-export", "/sys/fs/cgroup/systemd",
                                                                 "/sys/fs/cgroup/systemd/user.slice",
                                                                 "/sys/fs/cgroup/systemd" + V1_PATH]
    assert all(m.submounts == [] for m in plan.mounts)


def test_v1_with_cgroup_namespace() -> None:
    spec = make_spec(linux={"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "cgroup"}]})
    plan = plan_for(spec)
    assert mounts_of(plan)[-1] == ("bind", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/systemd" + V1_PATH, [], NOEXEC)
    assert mounts_of(plan)[:-1] == tmpfs_mounts() + interface_mounts()
    assert plan.mounts[-1].create is False


def test_v1_container_in_the_root_of_name_systemd_refused() -> None:
    with pytest.raises(HookError, match="is the hierarchy's root") as info:
        plan_for(facts=make_facts(cgroup="9:name=systemd:/\n0::/\n"))
    assert info.value.code == 1


def test_v1_host_without_name_systemd() -> None:
    host = "\n".join(line for line in HYBRID_HOST.splitlines() if "name=systemd" not in line)
    plan = plan_for(facts=make_facts(host=host))
    assert mounts_of(plan) == tmpfs_mounts() + interface_mounts()
    assert plan.notes == ["no name=systemd cgroup hierarchy on this host or for this container"]


def test_v1_hybrid_with_unified_in_the_container() -> None:
    mounts = V1_RUNC + f"208 204 0:38 {V1_PATH} {R}/sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n"
    cgroup = V1_CGROUP.replace("0::/", "0::" + V1_PATH)
    plan = plan_for(facts=make_facts(cgroup=cgroup, mounts=mounts))
    assert mounts_of(plan)[-1] == ("bind", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified" + V1_PATH, [], NOEXEC)
    # with the unified group at the root (as on this host) it is left alone, with a note
    plan = plan_for(facts=make_facts(mounts=mounts))
    assert mounts_of(plan)[-1][1] == "/sys/fs/cgroup/systemd" + V1_PATH
    assert plan.notes == ["the container has no cgroup2 group of its own: /sys/fs/cgroup/unified left read-only"]


def v2_facts(mount_root: str, path: str = V2_PATH) -> HostFacts:
    mounts = container_mounts(f"204 203 0:23 {mount_root} {R}/sys/fs/cgroup ro - cgroup2 cgroup2 rw,nsdelegate")
    return make_facts(host=V2_HOST, cgroup=f"0::{path}\n", mounts=mounts)


def test_v2_with_cgroupns() -> None:
    spec = make_spec(linux={"namespaces": [{"type": "cgroup"}, {"type": "mount"}]})
    plan = plan_for(spec, v2_facts(V2_PATH))
    assert mounts_of(plan) == tmpfs_mounts() + interface_mounts() + [
        ("bind", "/sys/fs/cgroup", "/sys/fs/cgroup" + V2_PATH, [], NOEXEC)]
    assert plan.mounts[-1].create is False
    assert plan.notes == []


def test_v2_without_cgroupns() -> None:
    plan = plan_for(facts=v2_facts("/"))
    assert mounts_of(plan)[-1] == ("bind", "/sys/fs/cgroup" + V2_PATH, "/sys/fs/cgroup" + V2_PATH, [], NOEXEC)
    assert len(plan.mounts) == 11
    hide = plan.mounts[-2]
    assert (hide.kind, hide.target, hide.dirs) == ("tmpfs", "/sys/fs/cgroup/" + V2_PATH.split("/")[1],
                                                  ["/".join(V2_PATH.split("/")[2:])])


def test_v2_in_the_root_cgroup_is_refused() -> None:
    with pytest.raises(HookError, match="root cgroup2 group") as info:
        plan_for(facts=v2_facts("/", "/"))
    assert info.value.code == 1
    facts = v2_facts("/")
    facts.cgroups = {}  # no cgroup2 line at all
    with pytest.raises(HookError, match="root cgroup2 group"):
        plan_for(facts=facts)


def test_v2_cgroup_not_below_its_mount() -> None:
    with pytest.raises(HookError, match="is not below its /sys/fs/cgroup mount"):
        plan_for(facts=v2_facts("/other.slice/x"))


def test_v2_host_hierarchy_unreachable() -> None:
    facts = v2_facts(V2_PATH)
    facts.host_mounts = parse_mountinfo("22 1 253:0 / / rw - ext4 /dev/sda rw\n")
    with pytest.raises(HookError, match="not mounted where the hook can reach it"):
        plan_for(facts=facts)


def test_no_cgroup_filesystem_in_the_container() -> None:
    plan = plan_for(facts=make_facts(mounts=container_mounts()))
    assert mounts_of(plan) == tmpfs_mounts() + interface_mounts()
    assert plan.notes == ["the container has no cgroup filesystem at /sys/fs/cgroup: left as the runtime made it"]


def test_without_a_live_container() -> None:
    facts = make_facts(mounts="")
    facts.cgroups = {}
    plan = plan_for(facts=facts)
    assert mounts_of(plan) == tmpfs_mounts() + interface_mounts()
    assert plan.notes == ["cgroups are decided from the live container's mount table (no pid given)"]


PODMAN_MOUNTS = [
    {"destination": "/proc", "type": "proc"},
    {"destination": "/run", "type": "tmpfs", "options": ["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"]},
    {"destination": "/run/lock", "type": "tmpfs", "options": ["rw", "size=65536k"]},
    {"destination": "/tmp/", "type": "tmpfs", "options": ["rw", "tmpcopyup"]},
    {"destination": "/var/log/journal", "type": "tmpfs"},
    {"destination": "/sys/fs/cgroup", "type": "cgroup"},
]


def test_podman_systemd_always_mounts_are_skipped() -> None:
    plan = plan_for(make_spec(mounts=PODMAN_MOUNTS))
    assert plan.skipped == [(t, "config.json already mounts it") for t in ("/run", "/run/lock", "/tmp",
                                                                            "/var/log/journal")]
    targets = [m.target for m in plan.mounts]
    for t in ("/run", "/run/lock", "/tmp", "/var/log/journal"):
        assert t not in targets
    # the runtime's tmpfs are writable: the container interface and journal still go in them
    assert mounts_of(plan)[:5] == interface_mounts()


def test_run_bound_from_elsewhere_skips_run_host() -> None:
    mounts = [{"destination": "/run", "type": "bind", "source": "/srv/run", "options": ["rbind"]},
              {"destination": "/etc/machine-id", "type": "bind", "source": "/srv/mid"}]
    plan = plan_for(make_spec(mounts=mounts))
    assert plan.skipped == [
        ("/run", "config.json already mounts it"),
        ("/run/lock", "config.json mounts /run from elsewhere; not creating a mount point in it"),
        ("/run/host", "config.json mounts /run from elsewhere; not creating a mount point in it"),
        ("/etc/machine-id", "config.json already mounts it"),
    ]
    targets = [m.target for m in plan.mounts]
    assert "/run" not in targets and "/run/host" not in targets and "/etc/machine-id" not in targets
    kinds_paths = [(h.kind, h.path) for h in plan.host_steps]
    assert ("mkdir", STATE + "/host") not in kinds_paths
    assert ("write", STATE + "/machine-id") not in kinds_paths


def test_run_lock_not_created_inside_a_host_bind_of_run() -> None:
    mounts = [{"destination": "/run", "type": "bind", "source": "/srv/run", "options": ["rbind"]}]
    plan = plan_for(make_spec(mounts=mounts))
    lock = [m for m in plan.mounts if m.target == "/run/lock"]
    assert not lock or lock[0].create is False


def test_no_machine_id_commit_mask_without_a_writable_run() -> None:
    plan = plan_for(make_spec(mounts=[{"destination": "/run", "type": "bind", "source": "/srv/run"}]))
    targets = [m.target for m in plan.mounts]
    assert "/etc/machine-id" in targets
    assert MASK[1] not in targets
    assert not any(m.kind == "mask" for m in plan.mounts)


def test_machine_id_commit_mask_in_the_runtimes_run_tmpfs() -> None:
    plan = plan_for(make_spec(mounts=[{"destination": "/run", "type": "tmpfs"}]))
    assert MASK in mounts_of(plan)
    assert "/run" not in [m.target for m in plan.mounts]


def test_run_host_provided_by_config() -> None:
    plan = plan_for(make_spec(mounts=[{"destination": "/run/host", "type": "bind"}]))
    assert ("/run/host", "config.json already mounts it") in plan.skipped
    assert "/run/host" not in [m.target for m in plan.mounts]


def test_journal_from_elsewhere() -> None:
    plan = plan_for(make_spec(mounts=[{"destination": "/var/log/journal", "type": "bind", "source": "/x"}]))
    assert plan.skipped == [("/var/log/journal", "config.json already mounts it"),
                            ("/var/log/journal/" + MID, "config.json mounts /var/log/journal from elsewhere")]
    assert plan.journal_dir == ""


def test_submounts_below_run_and_tmp() -> None:
    mounts = V1_RUNC + (f"300 200 0:80 / {R}/run/secrets ro - tmpfs tmpfs rw\n"
                        f"301 300 0:81 / {R}/run/secrets/deep ro - tmpfs tmpfs rw\n"
                        f"302 200 254:0 /srv/x11 {R}/tmp/.X11-unix rw - ext4 /dev/vda rw\n"
                        f"303 200 0:82 / {R}/runner rw - tmpfs tmpfs rw\n"
                        f"304 200 0:83 / {R}/run rw - tmpfs tmpfs rw\n")
    plan = plan_for(facts=make_facts(mounts=mounts))
    subs = {m.target: m.submounts for m in plan.mounts}
    assert subs["/run"] == ["/run/secrets"]
    assert subs["/tmp"] == ["/tmp/.X11-unix"]
    assert subs["/run/lock"] == [] and subs["/var/log/journal"] == []
    assert "keeps /run/secrets on top" in plan.render()
    assert f"mask   unit         {MASK[1]} -> /dev/null" in plan.render()


def test_submounts_below_helper() -> None:
    mounts = parse_mountinfo("1 0 0:1 / /r/run/a rw - tmpfs t rw\n2 1 0:2 / /r/run/a/b rw - tmpfs t rw\n"
                             "3 0 0:3 / /r/run rw - tmpfs t rw\n4 0 0:4 / /r/runx rw - tmpfs t rw\n"
                             "5 0 0:5 / /r/run/c rw - tmpfs t rw\n")
    assert submounts_below(mounts, "/r/run") == ["/r/run/a", "/r/run/c"]
    assert submounts_below(mounts, "/r/tmp") == []


def test_user_namespace() -> None:
    linux = {"namespaces": [{"type": "user"}, {"type": "mount"}],
             "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
             "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}
    plan = plan_for(make_spec(linux=linux))
    own = "/sys/fs/cgroup/systemd" + V1_PATH
    iface = [(*MASK[:3], ["uid=100000", "gid=100000"], ()) if m == MASK else m for m in interface_mounts()]
    assert mounts_of(plan) == tmpfs_mounts(extra=["uid=100000", "gid=100000"]) + iface + [
        ("bind", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/systemd", [], RO), HIDE_V1, ("bind", own, own, [], NOEXEC)]
    chown = ("chown-cgroup", own, 0o755, "", 100000, 100000, "", "")
    assert host_of(plan) == [*default_host_steps(uid=100000), chown]
    export = [h.data for h in plan.host_steps if h.kind == "tmpfs"]
    assert export == [["mode=700", "size=1m", "nr_inodes=1k", "uid=100000", "gid=100000"]]


def test_user_namespace_with_only_uid_mapping() -> None:
    linux = {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}
    plan = plan_for(make_spec(linux=linux))
    assert plan.mounts[0].data == ["mode=755", "size=64m", "uid=100000", "gid=0"]
    assert plan.host_steps[-1].kind == "chown-cgroup"
    assert (plan.host_steps[-1].uid, plan.host_steps[-1].gid) == (100000, 0)


LABEL = "system_u:object_r:container_file_t:s0:c12,c34"


def test_mount_label_with_selinux() -> None:
    plan = plan_for(make_spec(linux={"mountLabel": LABEL}), make_facts(selinux=True))
    context = f'context="{LABEL}"'
    assert mounts_of(plan)[:4] == tmpfs_mounts(extra=[context])
    labelled = {h.path for h in plan.host_steps if h.label == LABEL}
    assert [h.data for h in plan.host_steps if h.kind == "tmpfs"] == [["mode=700", "size=1m", "nr_inodes=1k",
                                                                        context]]
    assert labelled == {STATE, STATE + "/host", STATE + "/host/unix-export", STATE + "/machine-id",
                        JROOT + "/.oci-systemd-hook/" + MID}
    assert plan.notes == []
    assert f"label {LABEL}" in plan.render()


def test_mount_label_without_selinux() -> None:
    plan = plan_for(make_spec(linux={"mountLabel": LABEL}), make_facts(selinux=False))
    assert mounts_of(plan)[:4] == tmpfs_mounts()
    assert all(h.label == "" for h in plan.host_steps)
    assert plan.notes == ["linux.mountLabel is set but SELinux is off on this host: no labels applied"]


def test_selinux_without_mount_label() -> None:
    plan = plan_for(facts=make_facts(selinux=True))
    assert mounts_of(plan)[:4] == tmpfs_mounts()
    assert all(h.label == "" for h in plan.host_steps)


def test_tmp_size_auto_from_the_live_memory_limit() -> None:
    plan = plan_for(facts=make_facts(memory_limit=512 << 20))
    assert plan.mounts[2].target == "/tmp"
    assert plan.mounts[2].data == ["mode=1777", "size=262144k"]


def test_tmp_size_auto_from_config_limit() -> None:
    spec = make_spec(linux={"resources": {"memory": {"limit": 1 << 30}}})
    assert plan_for(spec).mounts[2].data == ["mode=1777", "size=524288k"]


def test_tmp_size_auto_minimum() -> None:
    assert plan_for(facts=make_facts(memory_limit=1 << 20)).mounts[2].data == ["mode=1777", "size=1024k"]


@pytest.mark.parametrize(("limit", "ram"), [(None, 8 * GIB), (8 * GIB, 8 * GIB), (1 << 62, 8 * GIB), (512 << 20, 0)])
def test_tmp_size_auto_without_a_limit_below_ram(limit: int | None, ram: int) -> None:
    facts = make_facts(memory_limit=limit, ram=ram)
    assert tmp_size(make_settings(), make_spec(), facts) == ""
    assert plan_for(facts=facts).mounts[2].data == ["mode=1777"]


def test_explicit_tmp_size_and_run_size() -> None:
    plan = plan_for(facts=make_facts(memory_limit=512 << 20), settings=make_settings(tmp_size="2g", run_size="8m"))
    assert [m.data for m in plan.mounts[:4]] == [["mode=755", "size=8m"], ["mode=755", "size=8m"],
                                                 ["mode=1777", "size=2g"], ["mode=755", "size=8m"]]


def test_journal_off() -> None:
    plan = plan_for(settings=make_settings(journal="off"))
    assert plan.skipped == [("/var/log/journal/" + MID, "journal linking is off")]
    assert plan.journal_dir == ""
    assert plan.journal_mode == "off"
    assert not any(m.target.startswith("/var/log/journal/") for m in plan.mounts)
    assert not any(h.path.startswith(JROOT) for h in plan.host_steps)
    assert "/var/log/journal" in [m.target for m in plan.mounts]  # the tmpfs is still needed


def test_journal_root_missing() -> None:
    plan = plan_for(facts=make_facts(journal_root_exists=False))
    assert plan.skipped == [("/var/log/journal/" + MID, f"the host has no {JROOT}")]
    assert plan.journal_dir == ""


def test_journal_remove_mode() -> None:
    plan = plan_for(settings=make_settings(journal="remove"))
    assert plan.journal_mode == "remove"
    assert plan.journal_dir == JROOT + "/" + MID


def test_container_uuid_changes_the_machine_id() -> None:
    uuid = "0f1e2d3c-4b5a-4968-8776-655443322110"
    mid = uuid.replace("-", "")
    plan = plan_for(make_spec(process={"args": ["/sbin/init"], "env": ["container_uuid=" + uuid]}))
    assert plan.machine_id == mid
    assert mounts_of(plan)[4:9] == interface_mounts(mid)
    assert ("write", STATE + "/machine-id", 0o444, mid + "\n", None, None, "", "") in host_of(plan)
    assert ("write", STATE + "/host/container-uuid", 0o444, uuid + "\n", None, None, "", "") in host_of(plan)


def test_non_hex_id_gets_a_valid_machine_id() -> None:
    plan = plan_for(cid="mysystemd")
    assert plan.machine_id == machine_id_for("mysystemd")
    assert plan.state_dir == "/srv/state/mysystemd"


@pytest.mark.parametrize(("env", "manager"), [(["container=podman"], "podman"), ([], "oci"), (["container="], "oci"),
                                              (["container=docker"], "docker")])
def test_container_manager(env: list[str], manager: str) -> None:
    plan = plan_for(make_spec(process={"args": ["/sbin/init"], "env": env}))
    writes = {h.path: h.content for h in plan.host_steps if h.kind == "write"}
    assert writes[STATE + "/host/container-manager"] == manager + "\n"


def test_no_os_release_on_the_host() -> None:
    plan = plan_for(facts=make_facts(os_release=""))
    assert not any(h.kind == "copy" for h in plan.host_steps)


def test_render_mentions_every_target_and_step() -> None:
    plan = plan_for(make_spec(mounts=[{"destination": "/etc/machine-id", "type": "bind"},
                                      {"destination": "/sys/fs/cgroup", "type": "cgroup"}]),
                    make_facts(journal_root_exists=False))
    text = plan.render()
    assert text.splitlines()[0] == f"container {CID}"
    assert f"machine-id {MID}" in text
    for m in plan.mounts:
        assert f" {m.target} <- " in text
    for h in plan.host_steps:
        assert h.path in text
    for target, reason in plan.skipped:
        assert f"skip   {target}: {reason}" in text
    assert "mount  tmpfs        /tmp <- tmpfs [nosuid,nodev,mode=1777]" in text
    assert f"host   write        {STATE}/machine-id" not in text  # skipped: config provides it


def test_as_dict_round_trips_through_jsonlite() -> None:
    linux = {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}], "mountLabel": LABEL}
    plan = plan_for(make_spec(linux=linux, mounts=PODMAN_MOUNTS[:2]), make_facts(selinux=True))
    d = plan.as_dict()
    assert jsonlite.loads(jsonlite.dumps(d)) == d
    assert jsonlite.loads(jsonlite.dumps(d, indent=2)) == d
    assert d["machine_id"] == MID and d["container_id"] == CID and d["state_dir"] == STATE
    assert d["skipped"] == [{"target": "/run", "reason": "config.json already mounts it"}]
    mounts = d["mounts"]
    assert isinstance(mounts, list)
    assert mounts[0]["target"] == "/run/lock" and mounts[0]["flags"] == ["nosuid", "nodev", "noexec"]
    host = d["host"]
    assert isinstance(host, list) and host[0] == {"kind": "mkdir", "path": STATE, "mode": "0o755", "content": "",
                                                  "uid": None, "gid": None, "label": LABEL, "source": "", "data": []}


def test_read_only_root_gets_a_volatile_var_lib_systemd() -> None:
    """systemd-logind's StateDirectory=systemd/linger cannot be created on a read-only root."""
    plan = plan_for(make_spec(root={"path": "rootfs", "readonly": True}))
    mounts = mounts_of(plan)
    assert ("tmpfs", "/var/lib/systemd", "tmpfs", ["mode=755", "size=64m"], NOEXEC) in mounts
    assert mounts.index(("tmpfs", "/var/lib/systemd", "tmpfs", ["mode=755", "size=64m"], NOEXEC)) == 4
    assert "/var/lib/systemd" not in [m.target for m in plan_for().mounts], "only for read-only roots"


def test_read_only_root_leaves_a_provided_var_lib_systemd_alone() -> None:
    mounts = [{"destination": "/var/lib/systemd", "type": "bind", "source": "/srv/state"}]
    plan = plan_for(make_spec(root={"path": "rootfs", "readonly": True}, mounts=mounts))
    assert "/var/lib/systemd" not in [m.target for m in plan.mounts]
    assert ("/var/lib/systemd", "config.json already mounts it") in plan.skipped


# --- what a tenant cannot choose: machine ids, journals, sizes (the threat model) -------------------

UUID_MID = "0f1e2d3c4b5a49688776655443322110"


def uuid_spec(mid: str = UUID_MID, **overrides: Any) -> Spec:
    return make_spec(process={"args": ["/sbin/init"], "env": ["container_uuid=" + mid]}, **overrides)


@pytest.mark.parametrize(("facts_attrs", "why"), [
    ({"host_machine_id": UUID_MID}, "it is the host's own machine id"),
    ({"mid_claims": {UUID_MID: "other"}}, "the live container other has it"),
    ({"journal_owners": {UUID_MID: "other"}}, "its journal on the host belongs to container other"),
    ({"journal_owners": {UUID_MID: ""}}, "a journal directory of that name on the host is not the hook's"),
])
def test_container_uuid_aimed_at_someone_else_is_not_honoured(facts_attrs: dict[str, Any], why: str) -> None:
    plan = plan_for(uuid_spec(), make_facts(**facts_attrs))
    assert plan.machine_id == MID, "the container's own id instead"
    assert plan.notes == [f"machine id {UUID_MID} not used: {why}"]
    assert plan.journal_dir == JROOT + "/" + MID


def test_container_uuid_of_its_own_is_honoured() -> None:
    facts = make_facts(mid_claims={UUID_MID: CID}, journal_owners={UUID_MID: CID})
    plan = plan_for(uuid_spec(), facts)
    assert (plan.machine_id, plan.notes) == (UUID_MID, [])
    assert ("journal", JROOT + "/.oci-systemd-hook/" + UUID_MID, 0o755, "", None, None, "", "") in host_of(plan)


def test_own_id_taken_falls_back_to_its_hash() -> None:
    from oci_systemd_hook.ids import hashed_machine_id

    plan = plan_for(facts=make_facts(mid_claims={MID: "someone-else"}))
    assert plan.machine_id == hashed_machine_id(CID)
    plan = plan_for(facts=make_facts(host_machine_id=MID))
    assert plan.machine_id == hashed_machine_id(CID)


def test_no_machine_id_left_is_bad_input() -> None:
    from oci_systemd_hook.ids import hashed_machine_id

    claims = {MID: "a", hashed_machine_id(CID): "b"}
    with pytest.raises(InputError, match="no usable machine id") as info:
        plan_for(facts=make_facts(mid_claims=claims))
    assert info.value.code == 2


def test_a_journal_directory_that_is_not_ours_is_not_linked() -> None:
    plan = plan_for(facts=make_facts(journal_owners={MID: ""}))
    assert plan.machine_id == MID and plan.journal_dir == ""
    assert not any(m.target.startswith("/var/log/journal/") for m in plan.mounts)
    assert not any(h.kind == "journal" for h in plan.host_steps)
    assert plan.skipped == [("/var/log/journal/" + MID, f"{JROOT}/{MID} on the host is not this container's "
                                                         "(the host's own, or another's)")]


def test_the_machine_id_is_claimed_before_anything_else() -> None:
    plan = plan_for()
    assert [h.kind for h in plan.host_steps][:2] == ["mkdir", "claim"]
    assert plan.host_steps[1].path == "/srv/state/.machine-ids/" + MID


def test_only_real_runtime_tmpfs_count_as_tmpfs() -> None:
    mounts = [{"destination": "/run", "type": "tmpfs", "source": "/host/dir", "options": ["rbind", "rw"]},
              {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}]
    plan = plan_for(make_spec(mounts=mounts))
    assert plan.runtime_tmpfs == ["/tmp"]
    targets = [m.target for m in plan.mounts]
    assert "/run/lock" not in targets and "/run/host" not in targets and MASK[1] not in targets
    assert ("/run/lock", "config.json mounts /run from elsewhere; not creating a mount point in it") in plan.skipped


def test_readonly_root_with_var_lib_volume_skips_var_lib_systemd() -> None:
    mounts = [{"destination": "/var/lib", "type": "bind", "source": "/vol", "options": ["rbind"]}]
    plan = plan_for(make_spec(mounts=mounts, root={"path": "rootfs", "readonly": True}))
    assert "/var/lib/systemd" not in [m.target for m in plan.mounts]
    assert ("/var/lib/systemd", "config.json mounts /var/lib from elsewhere; not creating a mount point in it") \
        in plan.skipped


def test_annotation_sizes_are_cut_and_said() -> None:
    settings = make_settings()
    settings.apply_annotations({"oci-systemd-hook.run-size": "100%", "oci-systemd-hook.tmp-size": "100%"})
    plan = plan_for(settings=settings)
    quarter = f"size={8 * GIB // 4 // 1024}k"
    sized = {m.target: m.data[1] for m in plan.mounts
             if m.kind == "tmpfs" and not m.target.startswith(("/sys", "/run/host"))}
    assert sized == {"/run": quarter, "/run/lock": quarter, "/tmp": quarter, "/var/log/journal": quarter}
    assert plan.notes == [f"run-size 100% from an annotation is above max-size 25%: cut to {quarter[5:]}",
                          f"tmp-size 100% from an annotation is above max-size 25%: cut to {quarter[5:]}"]


def test_cgroup_paths_one_level_deep_hide_nothing() -> None:
    mounts = V1_RUNC.replace(V1_PATH, "/c1")
    plan = plan_for(facts=make_facts(cgroup=V1_CGROUP.replace(V1_PATH, "/c1"), mounts=mounts))
    assert not any(m.kind == "tmpfs" and m.target.startswith("/sys") for m in plan.mounts)
    assert mounts_of(plan)[-1] == ("bind", "/sys/fs/cgroup/systemd/c1", "/sys/fs/cgroup/systemd/c1", [], NOEXEC)


def test_deep_cgroup_paths_hide_all_but_the_chain() -> None:
    path = "/docker/a/b/c1"
    plan = plan_for(facts=make_facts(cgroup=V1_CGROUP.replace(V1_PATH, path), mounts=V1_RUNC.replace(V1_PATH, path)))
    hide = plan.mounts[-2]
    assert (hide.kind, hide.target, hide.dirs, hide.on) == ("tmpfs", "/sys/fs/cgroup/systemd/docker", ["a/b/c1"],
                                                           "cgroup")
    assert "(holds only a/b/c1, then read-only)" in plan.render()


@pytest.mark.parametrize("value", ["x" * 65, "a\nb", "podman; rm", "ünï", "x" * (1 << 20)])
def test_container_manager_must_be_a_name(value: str) -> None:
    plan = plan_for(make_spec(process={"args": ["/sbin/init"], "env": ["container=" + value]}))
    writes = {h.path: h.content for h in plan.host_steps if h.kind == "write"}
    assert writes[STATE + "/host/container-manager"] == "oci\n"
    assert any("container= is not a manager name" in n for n in plan.notes)


def test_container_manager_names_pass() -> None:
    plan = plan_for(make_spec(process={"args": ["/sbin/init"], "env": ["container=systemd-nspawn"]}))
    writes = {h.path: h.content for h in plan.host_steps if h.kind == "write"}
    assert writes[STATE + "/host/container-manager"] == "systemd-nspawn\n"
    assert plan.notes == []
