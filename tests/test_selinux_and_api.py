"""SELinux labels through the real kernel layer, and the library API used by a container manager.

This kernel has no SELinux: the two calls that need it (the tmpfs `context=` option and the
security.selinux xattr) are recorded instead of made, in a driver process, and everything
else (the namespace, the mounts, the host files) is real. That is the only fake here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oci_systemd_hook.ids import machine_id_for
from tests.fakecontainer import REPO, FakeContainer, host_mount_table, needs_root

pytestmark = [needs_root, pytest.mark.root]

LABEL = "system_u:object_r:container_file_t:s0:c1,c2"

SELINUX_DRIVER = """
import json, os, sys
sys.path.insert(0, {repo!r})
from oci_systemd_hook import hostfacts, linux
contexts, labels = [], []
real_fsconfig = linux.fsconfig
def fsconfig(fd, cmd, key=None, value=None, aux=0):
    if key == "context":  # SELinux-only mount option: record it, the kernel would refuse it
        contexts.append(value)
        return None
    return real_fsconfig(fd, cmd, key, value, aux)
linux.fsconfig = fsconfig
os.setxattr = lambda path, name, value, *a, **k: labels.append([path, name, value.decode()])
hostfacts.selinux_enabled = lambda: True
from oci_systemd_hook.cli import main
rc = main(sys.argv[2:])
json.dump({{"rc": rc, "contexts": contexts, "labels": labels}}, open(sys.argv[1], "w"))
"""


def test_mount_label_reaches_tmpfs_and_host_files(tmp_path: Path) -> None:
    config = {"linux": {"namespaces": [{"type": "mount"}], "mountLabel": LABEL}}
    with FakeContainer(tmp_path / "c", config=config) as c:
        out = tmp_path / "calls.json"
        res = subprocess.run([sys.executable, "-I", "-c", SELINUX_DRIVER.format(repo=str(REPO)), str(out),
                              "prestart", *c.hook_args()], input=json.dumps(c.state()).encode(),
                             capture_output=True, env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""}, check=False)
        calls = json.loads(out.read_text())
        assert calls["rc"] == 0, res.stderr.decode()
        # Every tmpfs got the container's label, and the mounts are really there.
        assert calls["contexts"] == [LABEL] * 5  # /run, /run/lock, /tmp, /var/log/journal, /run/host/unix-export
        for path in ("/run", "/run/lock", "/tmp", "/var/log/journal"):
            assert c.mount_at(path) is not None
        # The host-side files the container sees are labelled with it too.
        mid = machine_id_for(c.name)
        labelled = {Path(p) for p, name, value in calls["labels"] if name == "security.selinux" and value == LABEL}
        state = c.state_dir / c.name
        assert labelled == {state, state / "host", state / "host" / "unix-export", state / "machine-id",
                            c.journal_root / ".oci-systemd-hook" / mid}
        assert c.poststop().returncode == 0


API_DRIVER = """
import json, sys
sys.path.insert(0, {repo!r})
from oci_systemd_hook import api
from oci_systemd_hook.settings import Settings
settings = Settings()
settings.state_dir, settings.journal_root = sys.argv[4], sys.argv[5]
if sys.argv[1] == "prepare":
    plan = api.prepare(bundle=sys.argv[2], pid=int(sys.argv[3]), container_id="web1", settings=settings)
    print(json.dumps(None if plan is None else plan.as_dict()))
else:
    api.cleanup(container_id="web1", settings=settings)
    api.cleanup(container_id="web1", settings=settings)
"""


def test_library_api_prepare_and_cleanup(tmp_path: Path) -> None:
    """The README's example: a manager calls prepare() for its init process, cleanup() later."""
    before = host_mount_table()
    with FakeContainer(tmp_path) as c:
        def call(*args: str) -> str:
            res = subprocess.run([sys.executable, "-I", "-c", API_DRIVER.format(repo=str(REPO)), *args,
                                  str(c.state_dir), str(c.journal_root)], capture_output=True, text=True,
                                 env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""}, check=False)
            assert res.returncode == 0, res.stderr
            return res.stdout

        plan = json.loads(call("prepare", str(c.bundle), str(c.pid)))
        assert plan["machine_id"] == machine_id_for("web1")
        assert c.inside("/etc/machine-id").read_text().strip() == machine_id_for("web1")
        assert c.mount_at("/run") is not None
        assert (c.state_dir / "web1").is_dir()
        call("cleanup", "-", "0")
        assert not (c.state_dir / "web1").exists()
    assert host_mount_table() == before
