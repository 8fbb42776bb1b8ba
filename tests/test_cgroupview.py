"""The cgroup view on cgroup v1 hosts: the choice (image's systemd version, knob), reading the
version from an image, and the plans for hybrid and legacy hosts (no root: recorded tables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci_systemd_hook import cgroupview
from oci_systemd_hook.errors import HookError
from oci_systemd_hook.hostfacts import parse_mountinfo
from oci_systemd_hook.rootfs import Root
from tests.test_plan import HYBRID_HOST, RO, V1_CGROUP, V1_PATH, V2_HOST, make_facts, make_settings, make_spec, plan_for

NOEXEC = ("nosuid", "nodev", "noexec")
LEGACY_HOST = "\n".join(line for line in HYBRID_HOST.splitlines() if "cgroup2" not in line) + "\n"
HYBRID_CGROUP = V1_CGROUP.replace("0::/\n", f"0::{V1_PATH}\n")


@pytest.mark.parametrize("setting, layout, version, view", [
    ("auto", "hybrid", 252, "v1"),
    ("auto", "hybrid", 255, "v1"),
    ("auto", "hybrid", 256, "unified"),
    ("auto", "legacy", 262, "unified"),
    ("auto", "hybrid", None, "unified"),
    ("v1", "hybrid", 262, "v1"),
    ("unified", "legacy", 252, "unified"),
    ("v1", "unified", 252, "unified"),  # a v2 host has nothing else
])
def test_choice(setting: str, layout: str, version: int | None, view: str) -> None:
    got, why = cgroupview.choose(setting, layout, version)
    assert got == view and why


def test_host_layouts() -> None:
    assert cgroupview.host_layout(parse_mountinfo(HYBRID_HOST)) == "hybrid"
    assert cgroupview.host_layout(parse_mountinfo(LEGACY_HOST)) == "legacy"
    assert cgroupview.host_layout(parse_mountinfo(V2_HOST)) == "unified"


@pytest.mark.parametrize("files, version", [
    (["usr/lib/systemd/libsystemd-shared-252.so"], 252),
    (["usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-257.so"], 257),
    (["usr/lib64/systemd/libsystemd-shared-256.11-1.fc41.so", "usr/lib64/systemd/libsystemd-core-256.11-1.fc41.so"],
     256),
    (["usr/lib/systemd/libsystemd-shared-.so", "usr/lib/systemd/libsystemd-shared-abc.so"], None),
    ([], None),
])
def test_version_from_the_image(tmp_path: Path, files: list[str], version: int | None) -> None:
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"")
    with Root(str(tmp_path)) as root:
        assert cgroupview.guest_systemd_version(root) == version


def test_version_lookup_stays_in_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "systemd").mkdir(parents=True)
    (outside / "systemd" / "libsystemd-shared-999.so").write_bytes(b"")
    root = tmp_path / "root"
    (root / "usr").mkdir(parents=True)
    (root / "usr" / "lib").symlink_to(outside)  # absolute: resolved inside the root, where it is missing
    with Root(str(root)) as r:
        assert cgroupview.guest_systemd_version(r) is None


def _mounts(plan: object) -> list[tuple[str, str, str, tuple[str, ...], str]]:
    return [(m.kind, m.target, m.source, tuple(m.flags), m.on) for m in plan.mounts]  # type: ignore[attr-defined]


def test_hybrid_without_cgroup_namespace_binds_the_unified_root_read_only_and_the_own_group() -> None:
    plan = plan_for(facts=make_facts(cgroup=HYBRID_CGROUP, guest_systemd=262))
    assert plan.cgroup_view == "unified" and "systemd 262 refuses cgroup v1" in plan.cgroup_view_reason
    cg = [m for m in _mounts(plan) if m[1].startswith("/sys/fs/cgroup")]
    assert cg == [
        ("bind", "/sys/fs/cgroup", "/sys/fs/cgroup/unified", RO, "cgroup-root"),
        ("tmpfs", "/sys/fs/cgroup/user.slice", "tmpfs", NOEXEC, "cgroup"),
        ("bind", "/sys/fs/cgroup" + V1_PATH, "/sys/fs/cgroup/unified" + V1_PATH, NOEXEC, "cgroup"),
    ]
    assert "cgroups    cgroup2 on a hybrid host" in plan.render()


def test_hybrid_with_cgroup_namespace_binds_the_own_group_as_the_root() -> None:
    spec = make_spec(linux={"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "cgroup"}]})
    plan = plan_for(spec=spec, facts=make_facts(cgroup=HYBRID_CGROUP, guest_systemd=262))
    cg = [m for m in _mounts(plan) if m[1].startswith("/sys/fs/cgroup")]
    assert cg == [("bind", "/sys/fs/cgroup", "/sys/fs/cgroup/unified" + V1_PATH, NOEXEC, "cgroup-root")]


def test_hybrid_without_a_group_of_its_own_is_refused() -> None:
    with pytest.raises(HookError, match="no cgroup2 group of its own"):
        plan_for(facts=make_facts(cgroup=V1_CGROUP, guest_systemd=262))


def test_legacy_host_makes_the_group_on_a_private_cgroup2_mount() -> None:
    plan = plan_for(facts=make_facts(host=LEGACY_HOST, guest_systemd=None))
    assert plan.cgroup_view == "unified" and "cannot be read" in plan.cgroup_view_reason
    assert [(h.kind, h.path) for h in plan.host_steps if h.kind.startswith("cgroup")] == \
        [("cgroup2-group", V1_PATH.strip("/"))]
    cg = [m for m in _mounts(plan) if m[1].startswith("/sys/fs/cgroup")]
    assert cg == [
        ("bind", "/sys/fs/cgroup", "cgroup2:", RO, "cgroup-root"),
        ("tmpfs", "/sys/fs/cgroup/user.slice", "tmpfs", NOEXEC, "cgroup"),
        ("bind", "/sys/fs/cgroup" + V1_PATH, "cgroup2:" + V1_PATH.strip("/"), NOEXEC, "cgroup"),
    ]


def test_debian_12_keeps_v1_and_the_knob_overrides() -> None:
    plan = plan_for(facts=make_facts(cgroup=HYBRID_CGROUP, guest_systemd=252))
    assert plan.cgroup_view == "v1"
    assert ("bind", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/systemd", RO, "cgroup") in _mounts(plan)
    forced = plan_for(settings=make_settings(cgroup_view="unified"),
                      facts=make_facts(cgroup=HYBRID_CGROUP, guest_systemd=252))
    assert forced.cgroup_view == "unified" and "asked for" in forced.cgroup_view_reason
    kept = plan_for(settings=make_settings(cgroup_view="v1"), facts=make_facts(cgroup=HYBRID_CGROUP,
                                                                                guest_systemd=262))
    assert kept.cgroup_view == "v1"


def test_check_warns_when_the_images_systemd_refuses_this_v1_host(tmp_path: Path) -> None:
    from oci_systemd_hook.imagecheck import check_image
    from tests.fakecontainer import minimal_rootfs

    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        if cgroupview.host_layout(parse_mountinfo(f.read())) == "unified":
            pytest.skip("this host is cgroup v2: nothing to warn about")
    for version, warned in ((252, False), (262, True)):
        root = minimal_rootfs(tmp_path / str(version))
        (root / "usr/lib/systemd/libsystemd-shared-252.so").unlink()
        (root / f"usr/lib/systemd/libsystemd-shared-{version}.so").write_bytes(b"")
        (root / "usr/lib/systemd/systemd").write_bytes(b"\x7fELF")
        (root / "usr/lib/systemd/systemd").chmod(0o755)
        findings = [f for f in check_image(str(root)).as_dict()["findings"]  # type: ignore[union-attr]
                    if f["check"] == "cgroups"]
        assert bool(findings) == warned, findings
        if warned:
            assert findings[0]["severity"] == "warning" and "--cgroup-view=auto" in findings[0]["message"]


# --- on a legacy host, for real: the hook's own cgroup2 group (root; a FakeContainer) -----------------


@pytest.fixture
def legacy_ns() -> object:
    """A private mount namespace with no cgroup2 mount: the hook run there sees a legacy host."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root")
    from tests.realboot import Namespace

    ns = Namespace("legacy")
    try:
        yield ns
    finally:
        ns.close()


def _unified_root() -> Path:
    from tests.fakecontainer import cgroup2_root

    return cgroup2_root()


@pytest.mark.root
def test_legacy_host_group_is_made_moved_into_and_removed(tmp_path: Path, legacy_ns: object) -> None:
    from tests.fakecontainer import FakeContainer, host_mount_table

    wrap = ["nsenter", "-t", str(legacy_ns.pid), "-m", "--"]  # type: ignore[attr-defined]
    host_before = host_mount_table()
    with FakeContainer(tmp_path / "c") as c:
        res = c.run_hook(args=["--cgroup-view=unified"], wrap=wrap)
        assert res.returncode == 0, res.stderr
        group = _unified_root() / c.name  # the one cgroup2 hierarchy, seen from the host
        assert group.is_dir()
        assert Path(f"/proc/{c.pid}/cgroup").read_text().splitlines()[-1] == f"0::/{c.name}"
        top = c.mount_at("/sys/fs/cgroup")
        own = c.mount_at(f"/sys/fs/cgroup/{c.name}")
        assert top is not None and top.fstype == "cgroup2" and "ro" in top.options.split(",")
        assert own is not None and own.fstype == "cgroup2" and "rw" in own.options.split(",")
        assert host_mount_table() == host_before, "the hook's cgroup2 mount is never attached on the host"
        c.stop()
        assert c.poststop(wrap=wrap).returncode == 0
        assert not group.exists(), "poststop removes the group"
    assert host_mount_table() == host_before


@pytest.mark.root
def test_legacy_host_group_is_rolled_back_when_prestart_fails(tmp_path: Path, legacy_ns: object) -> None:
    from tests.fakecontainer import FakeContainer

    wrap = ["nsenter", "-t", str(legacy_ns.pid), "-m", "--"]  # type: ignore[attr-defined]
    with FakeContainer(tmp_path / "c") as c:
        res = c.run_hook(args=["--cgroup-view=unified"], wrap=wrap,
                         env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": "", "OCI_SYSTEMD_HOOK_FAIL_AT": "open_tree"})
        assert res.returncode != 0 and "injected failure" in res.stderr
        assert not (_unified_root() / c.name).exists(), "the group is removed again"
        # back in the hierarchy's root: on a legacy host that is where every process is
        assert Path(f"/proc/{c.pid}/cgroup").read_text().splitlines()[-1] == "0::/"


@pytest.mark.root
def test_removing_a_deep_and_wide_group_is_bounded_and_complete(tmp_path: Path) -> None:
    """What a container's systemd (or a hostile one) nests inside its group goes with it."""
    import os

    from oci_systemd_hook import cgroup2

    if os.geteuid() != 0:
        pytest.skip("needs root")
    top = cgroup2.open_hierarchy()
    name = f"osh-test-deep-{os.getpid()}"
    try:
        group, created = cgroup2.make_group(top, name)
        os.close(group)
        assert created == [name]
        deep = name + "".join(f"/d{i}" for i in range(300))  # deeper than Python's recursion would go
        os.close(cgroup2.make_group(top, deep)[0])
        for i in range(50):
            os.close(cgroup2.make_group(top, f"{name}/w{i}/x")[0])
        assert (_unified_root() / name / "d0" / "d1").is_dir()
        cgroup2.remove_group(top, name)
        assert not (_unified_root() / name).exists()
    finally:
        if (_unified_root() / name).exists():
            cgroup2.remove_group(top, name)
        os.close(top)
