"""Docker and containerd daemons of the tests' own, for the runtime wrapper's real tests.

Each daemon runs in a private mount namespace made by `unshare -m` (so its container
mounts, and whatever the hook mounts on the host side, never reach the host's table),
with its data, state, socket and configuration in scratch space. dockerd gets no
iptables rules, no bridge and no IP forwarding, and containers run with `--network none`:
the host's networking and its Docker configuration are never touched. dockerd 20.10
writes its trust key to /etc/docker/key.json whatever its flags say, so a scratch
directory is bound over /etc/docker inside the namespace, and containerd's shims, which
put their sockets in /run/containerd whatever they are told, get a tmpfs on /run.

The hook's knobs reach it the way an administrator sets them: as OCI_SYSTEMD_HOOK_*
variables in the daemon's environment, which the wrapper copies into the hook entries.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from oci_systemd_hook.installer import RUNTIME
from tests.fakecontainer import REPO

DOCKER = "/usr/bin/docker"  # the docker.io client; /usr/local/bin may hold a newer one
IMAGE = "osh/debian12"
PREFIX_NAME = "prefix"


def require(*programs: str) -> None:
    """Skip unless every program is installed (scripts/setup installs them for CI)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for program in programs:
        if shutil.which(program) is None and not os.path.exists(program):
            pytest.skip(f"{program} is not installed (scripts/setup installs it)")


def install_wrapper(scratch: Path, *extra: str) -> Path:
    """`oci-systemd-hook install` into a scratch prefix; returns the wrapper's path."""
    prefix = scratch / PREFIX_NAME
    subprocess.run(
        [str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else "python3",
         "-m", "oci_systemd_hook", "install", "--prefix", str(prefix), *extra],
        check=True, capture_output=True, text=True, cwd=REPO,
    )
    return prefix / RUNTIME


def hook_env(scratch: Path) -> dict[str, str]:
    """The hook's scratch state and journal roots, as daemon environment variables."""
    (scratch / "hook-state").mkdir(exist_ok=True)
    (scratch / "journal").mkdir(exist_ok=True)
    return {"OCI_SYSTEMD_HOOK_STATE_DIR": str(scratch / "hook-state"),
            "OCI_SYSTEMD_HOOK_JOURNAL_ROOT": str(scratch / "journal")}


class Daemon:
    """A daemon process started in a private mount namespace; its pid is the namespace's."""

    name = "daemon"

    #: The parent cgroup the engine makes in every hierarchy (dockerd: /docker; containerd: its namespace).
    cgroup_parent = ""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = scratch / f"{self.name}.log"
        self.parents_before = self._parents()

    def _parents(self) -> set[Path]:
        return {p for p in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}") if p.is_dir()} \
            if self.cgroup_parent else set()

    def _start(self, script: str, env: dict[str, str]) -> None:
        # containerd's shims put their sockets in /run/containerd/s whatever the configuration
        # says: a tmpfs over /run keeps them (and anything else a daemon drops there) in the
        # namespace.
        script = "mount -t tmpfs -o mode=0755 tmpfs /run\n" + script
        environ = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **env}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-euc", script],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environ,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def mount_points(self) -> list[str]:
        """Mount points in the daemon's namespace (where the hook's host side happens)."""
        lines = Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines()
        return [line.split()[4] for line in lines]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        for parent in self._parents() - self.parents_before:  # the engine's own, left by it: the host as before
            try:
                parent.rmdir()
            except OSError:
                pass

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class Dockerd(Daemon):
    """dockerd (with the containerd it manages) in scratch space."""

    name = "dockerd"
    cgroup_parent = "docker"

    def __init__(self, scratch: Path, daemon_json: Path, env: dict[str, str]) -> None:
        super().__init__(scratch)
        self.socket = scratch / "docker.sock"
        etc = scratch / "etc-docker"
        etc.mkdir(exist_ok=True)
        bind_etc = f"mount --bind {etc} /etc/docker\n" if os.path.isdir("/etc/docker") else ""
        script = (
            bind_etc
            + f"exec dockerd --iptables=false --ip6tables=false --ip-masq=false --bridge=none --ip-forward=false "
            f"--userland-proxy=false --data-root {scratch / 'data'} --exec-root {scratch / 'exec'} "
            f"-H unix://{self.socket} --config-file {daemon_json} --pidfile {scratch / 'docker.pid'}"
        )
        self._start(script, env)
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log_text()
                self.stop()
                raise RuntimeError(f"dockerd did not start:\n{log}")
            time.sleep(0.2)

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([DOCKER, "-H", f"unix://{self.socket}", *args], capture_output=True,
                              timeout=timeout, input=input.decode() if input is not None else None, text=True,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def import_rootfs(self, rootfs: Path, name: str = IMAGE) -> None:
        """`docker import` of a directory tree (the cached debootstrap image)."""
        if self.docker("image", "inspect", name, check=False).returncode == 0:
            return
        proc = subprocess.Popen([DOCKER, "-H", f"unix://{self.socket}", "import", "-", name],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
            tar.add(str(rootfs), arcname=".")
        proc.stdin.close()
        assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)
        super().stop()


class Containerd(Daemon):
    """A standalone containerd: CRI plugin off, scratch root, state and socket."""

    name = "containerd"
    cgroup_parent = "default"

    def __init__(self, scratch: Path, env: dict[str, str]) -> None:
        super().__init__(scratch)
        self.socket = scratch / "containerd.sock"
        config = scratch / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{scratch / "root"}"\n'
            f'state = "{scratch / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[ttrpc]\n"
            f'  address = "{scratch / "containerd.sock.ttrpc"}"\n'
        )
        self._start(f"exec containerd --config {config}", env)
        deadline = time.monotonic() + 60
        while self.ctr("version", check=False).returncode != 0:
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log_text()
                self.stop()
                raise RuntimeError(f"containerd did not start:\n{log}")
            time.sleep(0.2)

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """ctr, in the daemon's namespace: it makes its stdio fifos in /run/containerd/fifo."""
        command = ["ctr", "--address", str(self.socket), *args]
        if self.proc is not None:
            command = self.in_namespace(command)
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def in_namespace(self, args: Sequence[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "--", *args]
