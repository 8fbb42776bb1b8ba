"""/run/host/unix-export, for real: Debian 13 with openssh-server (systemd 257's
systemd-ssh-generator binds sshd there) in a container with no network but loopback, and
`oci-systemd-hook ssh ID COMMAND` running a command in it from the host."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import realboot
from tests.fakecontainer import REPO, host_mount_table, needs_root
from tests.hookwiring import hooks, write_launcher

pytestmark = [needs_root, pytest.mark.root, pytest.mark.realboot]


def ssh_tool(state_dir: Path, cid: str, key: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oci_systemd_hook", "ssh", "--state-dir", str(state_dir), "-i",
                           str(key), cid, *command], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PATH": os.environ["PATH"], "OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""})


def test_ssh_into_a_container_without_a_network(tmp_path: Path) -> None:
    if not any(os.access(os.path.join(d, "ssh"), os.X_OK) for d in os.environ["PATH"].split(":")):
        pytest.skip("no ssh client (scripts/setup installs openssh-client)")
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    state_dir, journal_root = tmp_path / "hook-state", tmp_path / "journal"
    journal_root.mkdir()
    launcher = write_launcher(tmp_path / "bin")
    host_before = realboot.mount_points()
    with realboot.Container(tmp_path / "c", release="debian-13-ssh", console=True, hostname="osh-ssh",
                            hooks=hooks(launcher, state_dir, journal_root)) as c:
        ssh_dir = c.rootfs / "root" / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text((tmp_path / "key.pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        c.create()
        c.start()
        assert c.wait_running(timeout=60) == ("running", ""), c.console_text()[-3000:]
        # a small tmpfs of the container's, mode 0700, on the host in the state directory
        assert c.exec(["stat", "-c", "%a %u", "/run/host/unix-export"]).split() == ["700", "0"]
        assert c.exec(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", "/run/host/unix-export"]).split()[0] == "tmpfs"
        export = state_dir / c.id / "unix-export"
        on_host = [m for m in host_mount_table() if m[0] == str(export)]
        assert [(m[1], "nosuid" in m[3], "noexec" in m[3]) for m in on_host] == [("tmpfs", True, True)], on_host
        st = export.stat()
        assert (oct(st.st_mode & 0o7777), st.st_uid) == ("0o700", 0)
        deadline = time.monotonic() + 20
        while not (export / "ssh").is_socket() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (export / "ssh").is_socket(), os.listdir(export)
        # the host reaches sshd there with no network, as socat would (through a descriptor of
        # the directory: pytest's tmp path is longer than AF_UNIX allows)
        dfd = os.open(export, os.O_PATH)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(10)
                conn.connect(f"/proc/self/fd/{dfd}/ssh")
                assert conn.recv(64).startswith(b"SSH-2.0-"), "no ssh banner on the host-side socket"
        finally:
            os.close(dfd)
        # what the container writes there is bounded: it cannot fill the host's /run
        full = c.exec_result(["dd", "if=/dev/zero", "of=/run/host/unix-export/fill", "bs=1M", "count=8"])
        assert full.returncode != 0 and "No space left" in full.stderr
        assert (export / "fill").stat().st_size <= 1 << 20
        c.exec(["rm", "/run/host/unix-export/fill"])
        # no network in the container: loopback only
        links = c.exec(["cat", "/proc/net/dev"])
        assert [line.split(":")[0].strip() for line in links.splitlines()[2:]] == ["lo"]

        res = ssh_tool(state_dir, c.id, key, "cat", "/proc/sys/kernel/hostname")
        assert (res.returncode, res.stdout) == (0, "osh-ssh\n"), res.stderr
        res = ssh_tool(state_dir, c.id, key, "systemctl", "is-system-running")
        assert res.stdout.strip() == "running", res.stderr

        # The container swaps the socket for a symlink to a host socket: ssh refuses, and the
        # host socket is never connected to.
        host_sock = tmp_path / "host.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(host_sock))
        listener.listen(1)
        listener.settimeout(3)
        accepted: list[object] = []
        thread = threading.Thread(target=lambda: accepted.append(_accept(listener)), daemon=True)
        thread.start()
        c.exec(["sh", "-c", f"systemctl stop sshd-unix-export.socket; rm -f /run/host/unix-export/ssh; "
                            f"ln -s {host_sock} /run/host/unix-export/ssh"])
        res = ssh_tool(state_dir, c.id, key, "true")
        assert res.returncode == 2 and "is a symlink: refusing to follow it" in res.stderr, res
        thread.join()
        listener.close()
        assert accepted == [None], "the host socket was connected to"

        c.kill(realboot.SIGRTMIN_3)
        assert c.wait_stopped(timeout=30)
        c.delete()
        assert not (state_dir / c.id).exists(), "poststop removes the exported directory with the state"
        assert not [m for m in host_mount_table() if m[0].startswith(str(state_dir))], "the tmpfs is unmounted"
    assert realboot.mount_points() == host_before


def _accept(listener: socket.socket) -> object:
    try:
        conn, _ = listener.accept()
        conn.close()
        return "connected"
    except OSError:
        return None


def test_ssh_without_a_socket_or_a_container_is_one_line(tmp_path: Path) -> None:
    from tests.fakecontainer import FakeContainer

    with FakeContainer(tmp_path / "c") as c:
        assert c.run_hook().returncode == 0
        res = ssh_tool(c.state_dir, c.name, tmp_path / "key", "true")
        assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
        assert "exports no ssh socket" in res.stderr
        pid = c.pid
    res = ssh_tool(c.state_dir, c.name, tmp_path / "key", "true")  # the record is there, its init gone
    assert res.returncode == 2 and f"its init {pid} is gone" in res.stderr, res.stderr
    res = ssh_tool(tmp_path / "state", "gone", tmp_path / "key", "true")
    assert res.returncode == 2 and "is it running with it?" in res.stderr
