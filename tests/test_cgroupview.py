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
