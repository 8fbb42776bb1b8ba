"""A fake container for root tests: a process in its own mount namespace whose rootfs is laid
out the way runc leaves it when it runs prestart hooks (before pivot_root).

Only the kernel objects the hook touches are real: the mount namespace, the rootfs bind,
the runtime's own mounts (tmpfs, binds) and the cgroup the process lives in.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from oci_systemd_hook.hostfacts import MountInfo, parse_mountinfo

REPO = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, mounts and cgroups")

V1_ROOT = Path("/sys/fs/cgroup/systemd")


def cgroup2_root() -> Path:
    """Where this host's cgroup2 hierarchy is mounted (hybrid: /sys/fs/cgroup/unified)."""
    for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text()):
        if m.fstype == "cgroup2" and m.root == "/":
            return Path(m.mountpoint)
    raise RuntimeError("no cgroup2 mount on this host")


def minimal_rootfs(root: Path) -> Path:
    """The directories a typical image has; /etc/machine-id as debootstrap leaves it."""
    for d in ("etc", "sbin", "proc", "dev", "sys/fs/cgroup", "run", "tmp", "var/log", "usr/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc/os-release").write_text('ID=fake\nPRETTY_NAME="fake image"\n')
    # systemd 252 (Debian 12): on a cgroup v1 host the hook keeps the v1 layout for it
    (root / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/systemd/libsystemd-shared-252.so").write_bytes(b"")
    return root


def host_mount_table() -> list[tuple[str, str, str, str]]:
    """The hook's own namespace's mounts, comparable before and after."""
    return sorted((m.mountpoint, m.fstype, m.root, m.options)
                  for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text()))


def with_export(table: list[tuple[str, str, str, str]], c: FakeContainer,
                cid: str | None = None) -> list[tuple[str, str, str, str]]:
    """A host mount table from before prestart, plus the one host mount a prepared container
    has while it lives: its unix-export tmpfs in the state directory."""
    export = (str(c.state_dir / (cid or c.name) / "unix-export"), "tmpfs", "/", "rw,nosuid,nodev,noexec,relatime")
    return sorted([*table, export])


#: A user namespace mapping container root to host 100000, for config.json.
USERNS: dict[str, object] = {"linux": {"namespaces": [{"type": "mount"}, {"type": "user"}],
                                       "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                                       "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}}

#: Where a hook gone wrong would mount, in either namespace: its targets resolved outside the
#: rootfs, or its default host directories. Mount tables compared through `relevant` ignore
#: unrelated host activity (other containers, image stores) and keep everything below the
#: test's own tmp directory (bundle, rootfs, state, journal).
HOOK_EXACT = ("/", "/run", "/run/lock", "/tmp", "/etc", "/etc/machine-id", "/var", "/var/log", "/sys", "/sys/fs")
HOOK_TREES = ("/run/host", "/run/oci-systemd-hook", "/var/log/journal", "/sys/fs/cgroup")
Tables = tuple[list[tuple[str, str, str, str, str]], list[tuple[str, str, str, str]]]


def relevant(mountpoint: str, tmp: Path) -> bool:
    if mountpoint in HOOK_EXACT:
        return True
    return any(mountpoint == t or mountpoint.startswith(t + "/") for t in (*HOOK_TREES, str(tmp)))


def host_table(tmp: Path) -> list[tuple[str, str, str, str]]:
    """The host's mount table where the hook could do harm, comparable before and after."""
    return [m for m in host_mount_table() if relevant(m[0], tmp)]


def container_table(c: FakeContainer) -> list[tuple[str, str, str, str, str]]:
    """The fake container's mount table where the hook could do harm."""
    return [(m.mountpoint, m.fstype, m.root, m.options, m.super_options) for m in c.mounts()
            if relevant(m.mountpoint, c.tmp)]


def tables(c: FakeContainer) -> Tables:
    return container_table(c), host_table(c.tmp)


def tree_snapshot(path: Path) -> dict[str, tuple[int, int, int, int, bytes]]:
    """Every entry below path with type, mode, owner, size and (for files/links) content."""
    snap: dict[str, tuple[int, int, int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if os.path.islink(p):
                data = os.readlink(p).encode()
            elif os.path.isfile(p):
                data = Path(p).read_bytes()
            else:
                data = b""
            snap[os.path.relpath(p, path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, data)
    return snap


class FakeContainer:
    """`with FakeContainer(tmp_path) as c:` gives a live process `c.pid` in a prepared namespace."""

    def __init__(self, tmp: Path, *, config: dict[str, object] | None = None, cgroup: str = "v1",
                 cgroupns: bool = False, unified_group: bool = False, runtime_mounts: list[tuple[str, str]] = (),  # type: ignore[assignment]
                 rootfs_readonly: bool = False, build_rootfs: bool = True, mount_proc: bool = False,
                 propagation: str = "private") -> None:
        self.tmp = tmp
        self.name = "osh-test-" + uuid.uuid4().hex[:10]
        self.bundle = tmp / "bundle"
        self.rootfs = self.bundle / "rootfs"
        self.state_dir = tmp / "state"
        self.journal_root = tmp / "journal"
        self.journal_root.mkdir(parents=True, exist_ok=True)
        self.rootfs.mkdir(parents=True, exist_ok=True)
        if build_rootfs:
            minimal_rootfs(self.rootfs)
        self.cgroup = cgroup
        self.cgroupns = cgroupns
        self.runtime_mounts = list(runtime_mounts)
        self.rootfs_readonly = rootfs_readonly
        self.mount_proc = mount_proc
        self.propagation = propagation
        self.config: dict[str, object] = {
            "ociVersion": "1.0.2",
            "process": {"args": ["/sbin/init"], "env": ["PATH=/usr/bin:/bin", "container=oci"]},
            "root": {"path": "rootfs"},
            "mounts": [],
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]
                      + ([{"type": "cgroup"}] if cgroupns else [])},
        }
        if config:
            self.config.update(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup_dir: Path | None = None
        self.unified_group = unified_group
        self.unified_dir: Path | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def write_config(self) -> None:
        (self.bundle / "config.json").write_text(json.dumps(self.config))

    def __enter__(self) -> FakeContainer:
        self.write_config()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _setup_script(self) -> str:
        r = shlex.quote(str(self.rootfs))
        lines = ["set -e"] + ([f"mount --bind {r} {r}"] if self.propagation == "private" else [])
        if self.mount_proc:  # as runc does; only where the image has a real directory
            lines += [f"if [ -d {r}/proc ] && [ ! -L {r}/proc ]; then mount -t proc proc {r}/proc; fi"]
        if self.cgroup == "v1":
            lines += [f"if [ -d {r}/sys/fs/cgroup ] && [ ! -L {r}/sys ] && [ ! -L {r}/sys/fs ] "
                      f"&& [ ! -L {r}/sys/fs/cgroup ]; then",
                      f"  mount -t tmpfs -o mode=755 cgroup {r}/sys/fs/cgroup",
                      f"  mkdir {r}/sys/fs/cgroup/systemd",
                      f"  mount --bind {shlex.quote(str(self.cgroup_dir))} {r}/sys/fs/cgroup/systemd",
                      f"  mount -o remount,bind,ro {r}/sys/fs/cgroup/systemd",
                      "fi"]
        elif self.cgroup == "v2":
            lines += [f"mount -t cgroup2 -o ro cgroup2 {r}/sys/fs/cgroup"]
        for kind, dest in self.runtime_mounts:
            d = shlex.quote(str(self.rootfs) + dest)
            if kind == "tmpfs":
                lines += [f"mkdir -p {d}", f"mount -t tmpfs -o mode=755 runtime {d}",
                          f"echo from-runtime > {d}/marker"]
            elif kind == "volume":  # a host directory bound in, as config.json's "bind" mounts are
                src = self.volume(dest)
                lines += [f"mkdir -p {d}", f"mount --bind {shlex.quote(str(src))} {d}"]
            elif kind == "file":
                src = self.tmp / ("runtime-file-" + dest.strip("/").replace("/", "_"))
                src.write_text("runtime file\n")
                lines += [f"mkdir -p $(dirname {d})", f"touch {d}", f"mount --bind {shlex.quote(str(src))} {d}"]
        if self.rootfs_readonly:
            lines += [f"mount -o remount,bind,ro {r}"]
        lines += ["echo ready", "exec sleep 1000"]
        return "\n".join(lines)

    def volume(self, dest: str) -> Path:
        """The host directory behind a "volume" runtime mount at `dest`."""
        src = self.tmp / ("volume-" + dest.strip("/").replace("/", "_"))
        src.mkdir(exist_ok=True)
        return src

    def start(self) -> None:
        if self.cgroup == "v1":
            self.cgroup_dir = V1_ROOT / self.name
        elif self.cgroup == "v2":
            self.cgroup_dir = cgroup2_root() / self.name
        if self.cgroup_dir is not None:
            self.cgroup_dir.mkdir()
        if self.unified_group:  # a hybrid host's runc: the container has its own cgroup2 group too
            self.unified_dir = cgroup2_root() / self.name
            self.unified_dir.mkdir()
        inner = ["unshare", "-m", "--propagation", self.propagation] + (["-C"] if self.cgroupns else [])
        inner += ["sh", "-c", self._setup_script()]
        enter = f"echo $$ > {shlex.quote(str(self.cgroup_dir))}/cgroup.procs; " if self.cgroup_dir else ""
        if self.unified_dir is not None:
            enter += f"echo $$ > {shlex.quote(str(self.unified_dir))}/cgroup.procs; "
        cmd = ["sh", "-c", enter + "exec " + " ".join(shlex.quote(a) for a in inner)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError(f"fake container did not start: {line!r}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for d in (self.cgroup_dir, self.unified_dir):
            if d is not None and d.exists():
                for child in sorted(d.rglob("*"), reverse=True):
                    if child.is_dir():
                        child.rmdir()
                d.rmdir()

    # --- talking to the hook ---------------------------------------------------------------------

    def state(self, **override: object) -> dict[str, object]:
        state: dict[str, object] = {"ociVersion": "1.0.2", "id": self.name, "status": "creating",
                                    "pid": self.pid, "bundle": str(self.bundle)}
        state.update(override)
        return {k: v for k, v in state.items() if v is not None}

    def hook_args(self) -> list[str]:
        return [f"--state-dir={self.state_dir}", f"--journal-root={self.journal_root}"]

    def run_hook(self, stage: str | None = "prestart", state: dict[str, object] | None = None,
                 args: list[str] | None = None, env: dict[str, str] | None = None,
                 stdin: bytes | None = None, timeout: float = 30,
                 wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [*(wrap or []), sys.executable, "-I", "-m", "oci_systemd_hook"] + ([stage] if stage else [])
        argv += self.hook_args() + (args or [])
        data = stdin if stdin is not None else json.dumps(state if state is not None else self.state()).encode()
        environ = {"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""} if env is None else env
        res = subprocess.run(argv, input=data, capture_output=True, env=environ, timeout=timeout, check=False)
        return subprocess.CompletedProcess(argv, res.returncode, res.stdout.decode(), res.stderr.decode())

    def poststop(self, **kw: object) -> subprocess.CompletedProcess[str]:
        """Like podman: no pid, status stopped, an empty environment."""
        return self.run_hook("poststop", self.state(pid=None, status="stopped"), env={}, **kw)  # type: ignore[arg-type]

    # --- looking inside --------------------------------------------------------------------------

    def mounts(self) -> list[MountInfo]:
        return parse_mountinfo(Path(f"/proc/{self.pid}/mountinfo").read_text())

    def mount_at(self, path: str) -> MountInfo | None:
        """The topmost mount at `path` inside the container."""
        found = None
        for m in self.mounts():
            if m.mountpoint == str(self.rootfs) + path:
                found = m
        return found

    def mounts_at(self, path: str) -> list[MountInfo]:
        return [m for m in self.mounts() if m.mountpoint == str(self.rootfs) + path]

    def inside(self, path: str) -> Path:
        """`path` in the container as its mount namespace sees it (through /proc/PID/root)."""
        return Path(f"/proc/{self.pid}/root{self.rootfs}{path}")

    def machine_id(self) -> str:
        from oci_systemd_hook.ids import machine_id_for

        return machine_id_for(self.name)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
