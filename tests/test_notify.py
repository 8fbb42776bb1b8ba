"""Readiness for real: NOTIFY_SOCKET=/run/host/notify in a container's env, the hook's relay
records what systemd says, `oci-systemd-hook wait` returns once it is READY=1, the relay
stays small under a flood and is gone after poststop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import realboot
from tests.fakecontainer import REPO, needs_root
from tests.hookwiring import hooks, write_launcher

pytestmark = [needs_root, pytest.mark.root, pytest.mark.realboot]


def tool(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oci_systemd_hook", *args, "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={"PATH": os.environ["PATH"], "OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""})


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def gone(pid: int, timeout: float = 5) -> bool:
    """The process is gone (or a zombie waiting for its reaper)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_wait_status_flood_and_the_relay_gone_after_poststop(tmp_path: Path) -> None:
    state_dir, journal_root = tmp_path / "hook-state", tmp_path / "journal"
    journal_root.mkdir()
    launcher = write_launcher(tmp_path / "bin")
    with realboot.Container(tmp_path / "c", env=["NOTIFY_SOCKET=/run/host/notify"], console=True,
                            hooks=hooks(launcher, state_dir, journal_root)) as c:
        c.create()
        relay, _ = json.loads((state_dir / c.id / "record.json").read_text())["relay"]
        assert tool(state_dir, "status", c.id).returncode == 1, "not ready before it starts"
        # Only the init speaks for the container: READY=1 from anyone else (root on the host
        # here, or a process in the container) is counted as ignored, never recorded.
        dfd = os.open(state_dir / c.id, os.O_PATH | os.O_DIRECTORY)
        target = f"/proc/self/fd/{dfd}/notify"  # the real path is longer than AF_UNIX allows
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as fake:
            fake.sendto(b"READY=1\nSTATUS=forged", target)
        deadline = time.monotonic() + 10
        while json.loads((state_dir / c.id / "notify.json").read_text()).get("ignored") != 1:
            assert time.monotonic() < deadline, (state_dir / c.id / "notify.json").read_text()
            time.sleep(0.05)
        res = tool(state_dir, "status", c.id)
        assert res.returncode == 1 and "forged" not in res.stdout and "1 ignored" in res.stdout, res
        c.start()
        res = tool(state_dir, "wait", c.id, "--timeout", "60")
        assert res.returncode == 0 and "ready" in res.stdout, res
        res = tool(state_dir, "status", c.id)
        assert res.returncode == 0 and ": ready" in res.stdout, res
        # systemd said READY=1: a halt now is safe, and systemctl agrees it is up
        assert c.exec(["systemctl", "is-system-running", "--wait"], check=False).strip() in ("running", "degraded")

        messages = json.loads((state_dir / c.id / "notify.json").read_text())["messages"]
        assert messages >= 1, "systemd's own notifications are recorded"
        # A flood, as root on the host: the relay stays small, its record bounded, and it goes on.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        big = b"STATUS=" + b"x" * 60_000 + b"\nUNKNOWN=" + b"y" * 1000
        sent = 0
        for i in range(20_000):
            try:
                sock.sendto(big if i % 2 else f"STATUS=flood {i}\nFOO=bar".encode(), target)
                sent += 1
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:  # the queue is full: the kernel bounds it
                time.sleep(0.001)
        sock.close()
        os.close(dfd)
        time.sleep(0.5)
        record = (state_dir / c.id / "notify.json").read_bytes()
        assert len(record) < 2048, len(record)
        assert sent > 1000 and json.loads(record)["ignored"] > 1000
        assert json.loads(record)["messages"] - messages < 100, "the flood was recorded as the init's"
        assert vm_hwm_kib(relay) <= 12 * 1024, "the relay stays within 12 MB"
        assert tool(state_dir, "wait", c.id, "--timeout", "1").returncode == 0

        c.kill(realboot.SIGRTMIN_3)
        assert c.wait_stopped(timeout=30)
        c.delete()
        assert gone(relay), "the relay ends with the container"
        assert not (state_dir / c.id).exists()


def test_wait_without_a_relay_times_out_with_2(tmp_path: Path) -> None:
    started = time.monotonic()
    res = tool(tmp_path, "wait", "nobody", "--timeout", "0.5")
    assert res.returncode == 2 and "not ready after 0.5s" in res.stdout
    assert time.monotonic() - started < 10
    assert tool(tmp_path, "status", "nobody").returncode == 2
