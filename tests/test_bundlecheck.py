"""`check --bundle`: what in a bundle's config.json systemd will trip on; and the README's edits
to a `runc spec` bundle boot for real."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oci_systemd_hook import bundlecheck
from oci_systemd_hook.errors import InputError
from tests import realboot
from tests.fakecontainer import REPO
from tests.hookwiring import write_launcher

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/runc").exists() and not Path("/usr/bin/runc").exists(),
                                reason="runc spec makes the bundles")


def readme_edits() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- runc-spec-edits[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert found, "the README's runc spec edits block"
    return found.group(1)


def runc_spec(bundle: Path) -> dict[str, Any]:
    bundle.mkdir(parents=True, exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    return json.loads((bundle / "config.json").read_text())


def findings(bundle: Path) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for f in bundlecheck.check_bundle(str(bundle)).findings:
        out.setdefault(f.check, []).append((f.severity, f.message))
    return out


def test_a_plain_runc_spec_is_named_for_what_it_lacks(tmp_path: Path) -> None:
    runc_spec(tmp_path)
    report = bundlecheck.check_bundle(str(tmp_path))
    got = findings(tmp_path)
    missing = {m.split()[0] for sev, m in got["capabilities"] if sev == "warning"}
    assert missing == {"CAP_SETPCAP", "CAP_SETUID", "CAP_SETGID"}
    assert any("218/CAPABILITIES" in m and "journald" in m for _, m in got["capabilities"])
    assert got["hooks"][0][0] == "warning" and "not in hooks.prestart" in got["hooks"][0][1]
    assert got["command"][0][0] == "warning"
    assert any("SIGRTMIN+3" in m for _, m in got["stop"])
    assert report.exit_status == 1


def test_after_the_readme_edits_only_notes_remain(tmp_path: Path) -> None:
    runc_spec(tmp_path)
    subprocess.run([sys.executable, "-c", readme_edits()], cwd=tmp_path, check=True)
    report = bundlecheck.check_bundle(str(tmp_path))
    assert [f.message for f in report.findings if f.severity in ("error", "warning")] == []
    assert report.exit_status == 0


def test_no_cgroup_mount_is_an_error(tmp_path: Path) -> None:
    config = runc_spec(tmp_path)
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    got = findings(tmp_path)
    assert got["cgroup"][0][0] == "error" and "Failed to mount tmpfs at /sys/fs/cgroup" in got["cgroup"][0][1]
    assert bundlecheck.check_bundle(str(tmp_path)).exit_status == 2


def test_rlimits_above_the_host_and_late_stages(tmp_path: Path) -> None:
    import resource

    config = runc_spec(tmp_path)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": hard + 1, "soft": 1024}]
    config["hooks"] = {"startContainer": [{"path": "/usr/libexec/oci/hooks.d/oci-systemd-hook"}]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    got = findings(tmp_path)
    assert got["rlimits"][0][0] == "error" and "error setting rlimit" in got["rlimits"][0][1]
    assert ("error", "the hook is in hooks.startContainer, which runs after pivot_root: use prestart or "
                     "createRuntime") in got["hooks"]


def test_cli_and_bad_bundles(tmp_path: Path) -> None:
    runc_spec(tmp_path / "b")
    res = subprocess.run([sys.executable, "-m", "oci_systemd_hook", "check", "--json", "--bundle",
                          str(tmp_path / "b")], capture_output=True, text=True, cwd=REPO, check=False)
    assert res.returncode == 1
    assert json.loads(res.stdout)["summary"]["warning"] == 5
    with pytest.raises(InputError):
        bundlecheck.check_bundle(str(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        bundlecheck.check_bundle(str(tmp_path / "bad"))
    res = subprocess.run([sys.executable, "-m", "oci_systemd_hook", "check"], capture_output=True, text=True,
                         cwd=REPO, check=False)
    assert res.returncode == 2 and "either ROOTFS" in res.stderr


@pytest.mark.root
@pytest.mark.realboot
def test_the_readme_edits_boot_a_runc_spec_bundle(tmp_path: Path) -> None:
    realboot.require_root()
    launcher = write_launcher(tmp_path / "bin")
    with realboot.Container(tmp_path / "c") as c:
        config = runc_spec(tmp_path / "spec")
        (c.bundle / "config.json").write_text(json.dumps(config))
        subprocess.run([sys.executable, "-c", readme_edits()], cwd=c.bundle, check=True)
        edited = json.loads((c.bundle / "config.json").read_text())
        state, journal = tmp_path / "state", tmp_path / "journal"
        for hooks in edited["hooks"].values():  # this test's launcher, state and journal directories
            for h in hooks:
                h["path"] = str(launcher)
                h["args"] += [f"--state-dir={state}", f"--journal-root={journal}"]
        c.config = edited
        c.create()
        c.start()
        word, failed = c.wait_running(timeout=60)
        assert (word, failed.strip()) == ("running", ""), c.output()
        c.kill(realboot.SIGRTMIN_3)
        assert c.wait_stopped(timeout=30)
        c.delete()
    assert not (state / c.id).exists()
