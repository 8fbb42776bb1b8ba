"""SELinux through libselinux's Python bindings, and the xattr fallback without them.

This kernel has no SELinux, and no libselinux bindings are installed: a fake `selinux` module
stands in for them (it records what the hook asks), and the mount option `context=` is
recorded instead of given to the kernel. Everything else is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci_systemd_hook import labels
from tests.fakecontainer import REPO, FakeContainer, host_mount_table, needs_root

LABEL = "system_u:object_r:container_file_t:s0:c3,c4"
FAKE_SELINUX = '''
import json, os
CALLS = []
def _log(*call):
    CALLS.append(list(call))
    path = os.environ.get("FAKE_SELINUX_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(list(call)) + "\\n")
def is_selinux_enabled():
    _log("is_selinux_enabled")
    return 1
def security_check_context(label):
    _log("security_check_context", label)
    if label.startswith("bogus"):
        raise OSError(22, "Invalid argument")
    return 0
def lsetfilecon(path, label):
    _log("lsetfilecon", path, label)
    return 0
'''


@pytest.fixture
def fake_bindings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "selinux.py").write_text(FAKE_SELINUX)
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    monkeypatch.delitem(sys.modules, "selinux", raising=False)
    monkeypatch.setattr(labels, "_module", labels._UNSET)
    import selinux

    yield selinux
    monkeypatch.setattr(labels, "_module", labels._UNSET)


def test_the_bindings_are_used_when_they_import(fake_bindings: object, tmp_path: Path) -> None:
    assert labels.enabled() is True
    assert labels.valid(LABEL) is True
    assert labels.valid("bogus_u:x") is False
    labels.set_label(str(tmp_path), LABEL)
    calls = fake_bindings.CALLS  # type: ignore[attr-defined]
    assert calls == [["is_selinux_enabled"], ["security_check_context", LABEL],
                     ["security_check_context", "bogus_u:x"], ["lsetfilecon", str(tmp_path), LABEL]]


def test_without_the_bindings_the_xattr_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "selinux", None)  # `import selinux` fails
    monkeypatch.setattr(labels, "_module", labels._UNSET)
    calls = []
    monkeypatch.setattr(os, "setxattr", lambda *a, **k: calls.append((a, k)))
    assert labels.bindings() is None
    assert labels.valid(LABEL) is None, "cannot be asked: the kernel decides"
    assert labels.enabled() is os.path.exists("/sys/fs/selinux/enforce")
    labels.set_label(str(tmp_path), LABEL)
    assert calls == [((str(tmp_path), "security.selinux", LABEL.encode()), {"follow_symlinks": False})]
    monkeypatch.setattr(labels, "_module", labels._UNSET)


DRIVER = """
import json, os, sys
sys.path.insert(0, {fake!r})
sys.path.insert(0, {repo!r})
from oci_systemd_hook import linux
contexts = []
real_fsconfig = linux.fsconfig
def fsconfig(fd, cmd, key=None, value=None, aux=0):
    if key == "context":  # SELinux-only mount option: record it, this kernel would refuse it
        contexts.append(value)
        return None
    return real_fsconfig(fd, cmd, key, value, aux)
linux.fsconfig = fsconfig
from oci_systemd_hook.cli import main
rc = main(sys.argv[2:])
json.dump({{"rc": rc, "contexts": contexts}}, open(sys.argv[1], "w"))
"""


def _prestart(c: FakeContainer, tmp_path: Path) -> tuple[dict[str, object], list[list[str]], str]:
    fake = tmp_path / "fake"
    fake.mkdir(exist_ok=True)
    (fake / "selinux.py").write_text(FAKE_SELINUX)
    out, log = tmp_path / "out.json", tmp_path / "selinux.log"
    res = subprocess.run([sys.executable, "-I", "-c", DRIVER.format(repo=str(REPO), fake=str(fake)), str(out),
                          "prestart", *c.hook_args()], input=json.dumps(c.state()).encode(), capture_output=True,
                         env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": "", "FAKE_SELINUX_LOG": str(log)}, check=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return json.loads(out.read_text()), calls, res.stderr.decode()


@needs_root
@pytest.mark.root
def test_prestart_labels_through_the_bindings(tmp_path: Path) -> None:
    config = {"linux": {"namespaces": [{"type": "mount"}], "mountLabel": LABEL}}
    with FakeContainer(tmp_path / "c", config=config) as c:
        result, calls, stderr = _prestart(c, tmp_path)
        assert result["rc"] == 0, stderr
        assert result["contexts"] == [LABEL] * 5  # /run, /run/lock, /tmp, /var/log/journal, /run/host/unix-export
        state = c.state_dir / c.name
        labelled = {Path(call[1]) for call in calls if call[0] == "lsetfilecon" and call[2] == LABEL}
        assert labelled == {state, state / "host", state / "host" / "unix-export", state / "machine-id",
                            c.journal_root / ".oci-systemd-hook" / c.machine_id()}
        assert ["security_check_context", LABEL] in calls
        assert c.poststop().returncode == 0


@needs_root
@pytest.mark.root
def test_an_invalid_mount_label_is_refused_in_one_line(tmp_path: Path) -> None:
    config = {"linux": {"namespaces": [{"type": "mount"}], "mountLabel": "bogus_u:object_r:nothing_t:s0"}}
    host_before = host_mount_table()
    with FakeContainer(tmp_path / "c", config=config) as c:
        before = [(m.mountpoint, m.mount_id) for m in c.mounts()]
        result, calls, stderr = _prestart(c, tmp_path)
        assert result["rc"] == 2
        assert stderr.count("\n") == 1 and "is not a valid SELinux context" in stderr, stderr
        assert [(m.mountpoint, m.mount_id) for m in c.mounts()] == before
        assert not (c.state_dir / c.name).exists()
        assert not any(call[0] == "lsetfilecon" for call in calls)
    assert host_mount_table() == host_before


def test_no_label_no_bindings_loaded(tmp_path: Path) -> None:
    """A container without linux.mountLabel never imports the bindings (start-path cost)."""
    bundle = tmp_path / "b"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["/sbin/init"]}, "root": {"path": "rootfs"}}))
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "selinux.py").write_text("raise SystemExit('imported')\n")
    code = (f"import sys\nsys.path.insert(0, {str(tmp_path / 'fake')!r})\nsys.path.insert(0, {str(REPO)!r})\n"
            "from oci_systemd_hook.cli import main\n"
            f"rc = main(['plan', '--bundle', {str(bundle)!r}, '--state-dir', {str(tmp_path / 's')!r}])\n"
            "assert 'selinux' not in sys.modules\nsys.exit(rc)\n")
    res = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60,
                         env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""}, check=False)
    assert res.returncode == 0, res.stderr
