"""`oci-systemd-hook check ROOTFS`: findings, severities, exit codes, and never reading outside the image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oci_systemd_hook import imagecheck as check
from oci_systemd_hook import imagefs

REPO = Path(__file__).resolve().parent.parent
DEBIAN = Path("/var/cache/oci-systemd-hook/debian-12/rootfs")
SECRET = "HOST-SECRET-7f3a9c"
ELF = Path("/bin/true").resolve()  # a dynamically linked host program stands in for systemd


def run_check(rootfs: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in a subprocess with a timeout: a hang fails the test, not the suite."""
    env = dict(os.environ, OCI_SYSTEMD_HOOK_SYSLOG_SOCKET="")
    return subprocess.run([sys.executable, "-m", "oci_systemd_hook", "check", str(rootfs), *extra],
                          capture_output=True, text=True, timeout=30, cwd=REPO, env=env)


def findings(rootfs: Path) -> list[dict[str, str]]:
    return check.check_image(str(rootfs)).as_dict()["findings"]  # type: ignore[return-value]


def severities(rootfs: Path, name: str) -> list[str]:
    return [f["severity"] for f in findings(rootfs) if f["check"] == name]


def good_image(root: Path) -> Path:
    """A small image that passes every check: merged /usr, systemd, loader, os-release, the API dirs."""
    for d in ("usr/bin", "usr/sbin", "usr/lib/systemd/system/multi-user.target.wants", "usr/lib64",
              "etc/systemd/system/multi-user.target.wants", "proc", "sys", "dev", "run", "tmp", "var/tmp",
              "var/log", "usr/lib/x86_64-linux-gnu/systemd"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (root / link).symlink_to(target)
    shutil.copy(ELF, root / "usr/lib/systemd/systemd")
    (root / "usr/sbin/init").symlink_to("/lib/systemd/systemd")
    interp = imagefs.elf_info(ELF.read_bytes()[:imagefs.ELF_PREFIX])
    assert interp is not None and interp[1], "the host's /bin/true should be dynamically linked"
    loader = root / interp[1].lstrip("/")
    loader.parent.mkdir(parents=True, exist_ok=True)
    loader.write_bytes(b"\x7fELF")
    (root / "usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-254.so").write_bytes(b"")
    (root / "usr/lib/os-release").write_text('NAME="Test"\nPRETTY_NAME="Test OS 1"\n')
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/machine-id").write_text("")
    (root / "etc/resolv.conf").write_text("")
    return root


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return good_image(tmp_path / "rootfs")


def test_good_image_is_all_ok(image: Path) -> None:
    res = run_check(image)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert all(line.startswith(("ok: ", "info: ")) for line in lines[:-1]), res.stdout
    assert "ok: /sbin/init -> /usr/lib/systemd/systemd is systemd" in lines
    assert "info: systemd version 254 (from /usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-254.so)" in lines
    assert any(line.startswith("ok: dynamic loader /lib") for line in lines)
    assert "ok: /etc/os-release: Test OS 1" in lines
    assert "0 error(s), 0 warning(s)" in lines[-1]


@pytest.mark.skipif(not (DEBIAN / "etc").is_dir(), reason=f"no cached image at {DEBIAN} (scripts/build-image)")
def test_cached_debian_image_has_no_errors() -> None:
    res = run_check(DEBIAN, "--json")
    report = json.loads(res.stdout)
    assert report["summary"]["error"] == 0, res.stdout
    assert res.returncode in (0, 1)
    checks = {(f["check"], f["severity"]) for f in report["findings"]}
    assert ("init", "ok") in checks and ("systemd", "ok") in checks and ("loader", "ok") in checks
    # bookworm ships systemd 252 and enables getty@tty1, which systemd skips in a container
    assert any(f["check"] == "version" and "252" in f["message"] for f in report["findings"])
    assert ("units", "info") in checks


def test_no_init_no_systemd_is_an_error(image: Path) -> None:
    (image / "usr/sbin/init").unlink()
    (image / "usr/lib/systemd/systemd").unlink()
    res = run_check(image)
    assert res.returncode == 2
    assert "error: no systemd binary" in res.stdout
    assert "error: /sbin/init is missing and there is no systemd" in res.stdout


def test_systemd_without_sbin_init_is_info(image: Path) -> None:
    (image / "usr/sbin/init").unlink()
    assert severities(image, "init") == ["info"]
    assert run_check(image).returncode == 0


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static is not installed")
def test_sbin_init_busybox(image: Path) -> None:
    shutil.copy("/bin/busybox", image / "usr/bin/busybox")
    (image / "usr/sbin/init").unlink()
    (image / "usr/sbin/init").symlink_to("../bin/busybox")
    # systemd is there too: it boots when started directly, so a warning.
    res = run_check(image)
    assert res.returncode == 1, res.stdout
    assert "warning: /sbin/init -> /usr/bin/busybox is busybox, not systemd" in res.stdout
    # No systemd at all: nothing to boot.
    (image / "usr/lib/systemd/systemd").unlink()
    res = run_check(image)
    assert res.returncode == 2
    assert "error: /sbin/init -> /usr/bin/busybox is busybox, not systemd, and the image has no systemd" in res.stdout


def test_init_script_and_non_executable(image: Path) -> None:
    init = image / "usr/sbin/init"
    init.unlink()
    init.write_text("#!/bin/sh\nexec /lib/systemd/systemd\n")
    init.chmod(0o755)
    assert any("is a script (/bin/sh)" in f["message"] for f in findings(image))
    (image / "usr/lib/systemd/systemd").chmod(0o644)
    assert "error" in severities(image, "systemd")


def test_missing_os_release_is_a_warning(image: Path) -> None:
    (image / "usr/lib/os-release").unlink()
    res = run_check(image)
    assert res.returncode == 1
    assert "warning: no os-release" in res.stdout


def test_run_as_a_file_is_an_error(image: Path) -> None:
    (image / "run").rmdir()
    (image / "run").write_text("")
    res = run_check(image)
    assert res.returncode == 2
    assert "error: /run is a regular file" in res.stdout


def test_missing_dirs_and_files_are_warnings(image: Path) -> None:
    (image / "var/tmp").rmdir()
    (image / "etc/resolv.conf").unlink()
    (image / "etc/machine-id").unlink()
    res = run_check(image)
    assert res.returncode == 1, res.stdout
    assert "warning: missing /var/tmp" in res.stdout
    assert "warning: /etc/resolv.conf is missing" in res.stdout
    assert "warning: /etc/machine-id is missing" in res.stdout


def test_machine_id_contents(image: Path) -> None:
    mid = image / "etc/machine-id"
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    assert severities(image, "machine-id") == ["info"]
    mid.write_text("uninitialized\n")
    assert severities(image, "machine-id") == ["ok"]
    mid.write_text("not-an-id\n")
    assert severities(image, "machine-id") == ["warning"]


def test_machine_id_fifo_does_not_hang(image: Path) -> None:
    (image / "etc/machine-id").unlink()
    os.mkfifo(image / "etc/machine-id")
    res = run_check(image)  # times out (and fails) if anything opened the FIFO for reading
    assert res.returncode == 2
    assert "error: /etc/machine-id is a FIFO" in res.stdout


def test_fifos_and_devices_everywhere_do_not_hang(image: Path) -> None:
    (image / "usr/lib/os-release").unlink()
    os.mkfifo(image / "usr/lib/os-release")
    (image / "etc/resolv.conf").unlink()
    os.mkfifo(image / "etc/resolv.conf")
    os.mkfifo(image / "etc/systemd/system/getty@.service")
    (image / "etc/systemd/system/multi-user.target.wants/getty@tty1.service").symlink_to("/dev/null")
    res = run_check(image)
    assert res.returncode in (1, 2), res.stdout


def test_symlinks_escaping_the_root_never_read_host_files(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    secret_file = host / "secret"
    secret_file.write_text(f'PRETTY_NAME="{SECRET}"\n{SECRET}\n')
    image = good_image(tmp_path / "rootfs")
    depth = "../" * (len(image.parts) + 2)
    for rel in ("usr/lib/os-release", "etc/machine-id", "etc/resolv.conf"):
        (image / rel).unlink()
        (image / rel).symlink_to(str(secret_file))  # absolute: clamped to the image's root
    (image / "etc/os-release").unlink()
    (image / "etc/os-release").symlink_to(depth + str(secret_file).lstrip("/"))  # relative, climbing out
    # The whole host directory as the image's unit directory and as init.
    (image / "etc/systemd/system").rename(image / "etc/systemd/system.orig")
    (image / "etc/systemd/system").symlink_to(str(host))
    (image / "usr/sbin/init").unlink()
    (image / "usr/sbin/init").symlink_to(depth + str(secret_file).lstrip("/"))
    (image / "run").rmdir()
    (image / "run").symlink_to(depth + "run")
    for extra in ((), ("--json",)):
        res = run_check(image, *extra)
        assert SECRET not in res.stdout + res.stderr  # a symlink's own text may be shown; never what is behind it
    report = json.loads(run_check(image, "--json").stdout)
    by_check = {f["check"]: f["severity"] for f in report["findings"]}
    assert by_check["os-release"] == "warning" and by_check["machine-id"] == "warning"
    assert by_check["directories"] == "error"  # /run -> ../../run is clamped onto itself: a loop


def test_masked_and_guarded_units(image: Path) -> None:
    wants = image / "usr/lib/systemd/system/multi-user.target.wants"
    units = image / "usr/lib/systemd/system"
    (units / "systemd-networkd-wait-online.service").write_text("[Service]\nExecStart=/bin/true\n")
    (wants / "systemd-networkd-wait-online.service").symlink_to("../systemd-networkd-wait-online.service")
    (units / "systemd-timesyncd.service").write_text("[Unit]\nConditionCapability=CAP_SYS_TIME\n")
    (wants / "systemd-timesyncd.service").symlink_to("../systemd-timesyncd.service")
    (units / "getty@.service").write_text("[Unit]\nDescription=getty\n")
    (image / "etc/systemd/system/multi-user.target.wants/getty@tty1.service").symlink_to("../getty@.service")
    found = {f["path"]: f["severity"] for f in findings(image) if f["check"] == "units"}
    assert found == {"systemd-networkd-wait-online.service": "warning", "systemd-timesyncd.service": "info",
                     "getty@tty1.service": "warning"}
    res = run_check(image)
    assert res.returncode == 1
    assert "systemctl mask systemd-networkd-wait-online.service" in res.stdout
    (image / "etc/systemd/system/systemd-networkd-wait-online.service").symlink_to("/dev/null")
    (image / "etc/systemd/system/getty@.service").symlink_to("/dev/null")  # masking the template
    assert {f["severity"] for f in findings(image) if f["check"] == "units"} == {"info"}
    assert run_check(image).returncode == 0


def test_missing_loader_is_an_error(image: Path) -> None:
    interp = imagefs.elf_info(ELF.read_bytes()[:imagefs.ELF_PREFIX])
    assert interp is not None
    (image / interp[1].lstrip("/")).unlink()
    res = run_check(image)
    assert res.returncode == 2
    assert f"error: systemd needs the dynamic loader {interp[1]}, which is missing" in res.stdout


def test_lib64_symlink_escaping_is_clamped(image: Path) -> None:
    # /lib64 -> /usr/lib64 is fine; a /lib64 pointing at the host's loader by a relative climb is not.
    (image / "lib64").unlink()
    (image / "lib64").symlink_to("../../../../../../../../lib64")
    assert "error" in severities(image, "loader")


def test_json_output_and_exit_codes_by_severity(image: Path) -> None:
    res = run_check(image, "--json")
    report = json.loads(res.stdout)
    assert set(report) == {"rootfs", "findings", "summary"}
    assert report["rootfs"] == str(image)
    assert {"severity", "check", "path", "message"} <= set(report["findings"][0])
    assert report["summary"]["exit_status"] == res.returncode == 0
    (image / "var/tmp").rmdir()
    res = run_check(image, "--json")
    assert json.loads(res.stdout)["summary"]["exit_status"] == res.returncode == 1
    assert json.loads(res.stdout)["summary"]["warning"] == 1
    (image / "usr/lib/systemd/systemd").unlink()
    res = run_check(image, "--json")
    summary = json.loads(res.stdout)["summary"]
    assert summary["exit_status"] == res.returncode == 2
    assert summary["verdict"] == "systemd cannot boot from this image"


def test_rootfs_that_is_not_a_directory_exits_2(tmp_path: Path) -> None:
    res = run_check(tmp_path / "missing")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "cannot open the container root" in res.stderr
    (tmp_path / "file").write_text("")
    assert run_check(tmp_path / "file").returncode == 2


def test_shown_strips_control_characters() -> None:
    assert imagefs.shown("a\x1b[31mb\nc") == "a?[31mb?c"
    assert imagefs.shown("x" * 500, 10) == "x" * 10 + "..."


def test_elf_info_rejects_garbage() -> None:
    assert imagefs.elf_info(b"") is None
    assert imagefs.elf_info(b"#!/bin/sh\n" + b"\0" * 100) is None
    assert imagefs.elf_info(b"\x7fELF\x09" + b"\0" * 100) is None
    truncated = ELF.read_bytes()[:80]
    info = imagefs.elf_info(truncated)
    assert info is not None and info[1] == ""


def test_check_and_prestart_read_the_same_systemd_version(image: Path) -> None:
    """`check` and prestart's cgroup view read the version with one parser: a Debian-style
    versioned name, libsystemd-core beside libsystemd-shared, a name that only looks alike."""
    from oci_systemd_hook.cgroupview import guest_systemd_version
    from oci_systemd_hook.rootfs import Root

    libdir = image / "usr/lib/x86_64-linux-gnu/systemd"
    (libdir / "libsystemd-shared-254.so").unlink()
    for name in ("libsystemd-core-257.9-1~deb13u1.so", "libsystemd-shared-257.9-1~deb13u1.so",
                 "libsystemd-shared-999.txt"):
        (libdir / name).write_bytes(b"")
    lines = run_check(image).stdout.splitlines()
    assert "info: systemd version 257 (from /usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-257.9-1~deb13u1.so)" \
        in lines, lines
    with Root(str(image)) as root:
        assert guest_systemd_version(root) == 257
