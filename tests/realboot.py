"""Boot the real cached Debian image under runc/crun: a helper library for tests.

Not a test module. Typical use::

    from tests import realboot

    def test_boots(tmp_path):
        with realboot.Container(tmp_path, cgroup="v2", hooks=...) as c:
            c.create(); c.start()
            state, failed = c.wait_running()

Every container gets its own writable overlay on top of the cached image (which is never
written to), a private runtime state directory (``--root``) under its work directory, and
on ``cgroup="v2"`` a private mount namespace where cgroup2 is mounted on /sys/fs/cgroup, so
the runtime sees a unified host.  ``close()`` (also run by ``with``, by the
``make_container`` fixture and, as a last resort, at interpreter exit) deletes the
container and removes every mount and process the helper made.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_IMAGE = REPO / "scripts" / "build-image"
DEFAULT_CACHE = Path("/var/cache/oci-systemd-hook")
RELEASES = {"debian-12": "bookworm", "debian-13": "trixie", "debian-sid": "sid", "debian-13-ssh": "trixie-ssh"}

# What the original hook's README asks for in config.json; CAP_SYS_ADMIN deliberately absent:
# systemd must boot unprivileged.
CAPABILITIES = [
    "CAP_AUDIT_WRITE",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_MKNOD",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_SYS_CHROOT",
]
SIGRTMIN_3 = 37  # runc 1.1.5 rejects the name RTMIN+3
USERNS_SIZE = 65536


def require_root() -> None:
    """Skip the calling test unless it runs as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (runc, mounts)")


def image_cache() -> Path:
    """The image cache directory (env OSH_IMAGE_CACHE overrides)."""
    return Path(os.environ.get("OSH_IMAGE_CACHE") or DEFAULT_CACHE)


def image_rootfs(release: str = "debian-12") -> Path:
    """Build the cached image if needed (scripts/build-image) and return its rootfs."""
    require_root()
    rootfs = image_cache() / release / "rootfs"
    if not (rootfs / "sbin" / "init").exists():
        subprocess.run([str(BUILD_IMAGE), RELEASES[release]], check=True, stdout=subprocess.DEVNULL)
    return rootfs


def mount_points(pid: int | str = "self") -> list[str]:
    """Mount points listed in /proc/PID/mountinfo, in order."""
    lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines]


def mountinfo(pid: int | str) -> list[str]:
    """Raw /proc/PID/mountinfo lines."""
    return Path(f"/proc/{pid}/mountinfo").read_text().splitlines()


class Namespace:
    """Where runtime commands run: the host (cgroup v1 hybrid as it is) or, for "v2", a
    private mount namespace with cgroup2 mounted on /sys/fs/cgroup, held open by a
    ``sleep infinity`` and entered with ``nsenter -m``."""

    def __init__(self, cgroup: str = "v1") -> None:
        if cgroup not in ("v1", "v2", "legacy"):
            raise ValueError(f"cgroup must be 'v1', 'v2' or 'legacy', not {cgroup!r}")
        self.cgroup = cgroup
        self._holder: subprocess.Popen[str] | None = None
        if cgroup in ("v2", "legacy"):
            # legacy: a v1 host that never mounted cgroup2 (RHEL 7 and the like): the hybrid
            # host's unified mount taken away in the namespace.
            setup = ("mount -t cgroup2 cgroup2 /sys/fs/cgroup" if cgroup == "v2" else
                     "for m in $(awk '{for (i = 7; i < NF; i++) if ($i == \"-\" && $(i + 1) == \"cgroup2\") print $5}' "
                     "/proc/self/mountinfo); do umount \"$m\"; done")
            self._holder = subprocess.Popen(
                [
                    "unshare",
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    setup + " && echo ready && exec sleep infinity",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self._holder.stdout is not None
            if self._holder.stdout.readline().strip() != "ready":
                self.close()
                raise RuntimeError(f"could not make a cgroup {cgroup} host in a private mount namespace")

    @property
    def pid(self) -> int | None:
        """PID holding the private namespace (None on the host)."""
        return self._holder.pid if self._holder else None

    def command(self, args: Sequence[str]) -> list[str]:
        """`args` wrapped so that it runs in this namespace."""
        if self._holder is None:
            return list(args)
        return ["nsenter", "-t", str(self._holder.pid), "-m", "--", *args]

    def run(
        self, args: Sequence[str], *, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `args` in this namespace, capturing text output."""
        proc = subprocess.run(
            self.command(args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    def close(self) -> None:
        """End the namespace (its mounts go with it)."""
        if self._holder is not None:
            if self._holder.poll() is None:
                self._holder.kill()
            self._holder.wait()
            if self._holder.stdout:
                self._holder.stdout.close()
            self._holder = None


class Console:
    """A --console-socket receiver: keeps the pty master open for the container's whole
    life (closing it would make every console write stall) and collects what the
    container writes to its console (systemd's boot log)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._buf = bytearray()
        self._last = time.monotonic()
        self._closing = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(1)
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
                break
            except socket.timeout:  # TimeoutError from 3.10 on
                continue
            except OSError:
                return
        else:
            return
        with conn:
            conn.settimeout(10)
            try:
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
            except OSError:
                return
        if not fds:
            return
        master = fds[0]
        try:
            while not self._closing.is_set():
                if not select.select([master], [], [], 0.1)[0]:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: no slave open right now; systemd reopens the console
                    chunk = b""
                if chunk:
                    self._buf += chunk
                    self._last = time.monotonic()
                else:
                    time.sleep(0.05)
        finally:
            os.close(master)

    def text(self, wait: float = 0) -> str:
        """Everything read from the console so far; with `wait`, first wait (at most that
        long) until nothing new has arrived for 0.3 s."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and time.monotonic() - self._last < 0.3:
            time.sleep(0.05)
        return self._buf.decode(errors="replace")

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._sock.close()
        self.path.unlink(missing_ok=True)


def _cleanup(state: dict[str, Any]) -> None:
    """Undo everything a Container made; idempotent. Module-level so that
    weakref.finalize can call it without keeping the Container alive."""
    errors: list[str] = []
    ns: Namespace | None = state.get("ns")
    runtime_cmd = state.get("runtime_cmd")
    if state.get("created") and ns is not None and runtime_cmd:
        proc = ns.run([*runtime_cmd, "delete", "--force", state["id"]], check=False)
        if proc.returncode != 0 and "does not exist" not in proc.stderr + proc.stdout:
            errors.append(f"delete: {proc.stderr.strip()}")
        state["created"] = False
    if state.get("console") is not None:
        state["console"].close()
        state["console"] = None
    if ns is not None:
        ns.close()
        state["ns"] = None
    rootfs: Path | None = state.get("mounted")
    if rootfs is not None:
        for _ in range(50):
            if subprocess.run(["umount", str(rootfs)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(rootfs)], capture_output=True)
            errors.append(f"{rootfs} was busy: lazily unmounted")
        state["mounted"] = None
    state_root: Path | None = state.get("state_root")
    if state_root is not None and state_root.exists():
        shutil.rmtree(state_root, ignore_errors=True)
    if errors:
        raise RuntimeError("; ".join(errors))


class Container:
    """One systemd container on the cached image.

    The bundle lives in ``workdir/bundle`` (``config.json`` + ``rootfs``, an overlay on the
    image).  ``self.config`` is the config.json dict; change it before ``create()``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        release: str = "debian-12",
        runtime: str = "runc",
        cgroup: str = "v1",
        cgroupns: bool | None = None,
        userns: int | None = None,
        readonly: bool = False,
        hooks: dict[str, Any] | None = None,
        args: Sequence[str] = ("/sbin/init",),
        env: Sequence[str] = (),
        hostname: str = "osh-test",
        container_id: str | None = None,
        console: bool = False,
    ) -> None:
        """cgroupns: add a cgroup namespace (default: only on v2). userns: first host uid/gid
        of a 65536-long mapping (None: no user namespace). console: terminal=true and the
        console is collected in ``console_text()``."""
        image = image_rootfs(release)
        self.workdir = Path(workdir)
        self.id = container_id or secrets.token_hex(32)
        self.runtime = runtime
        self.cgroup = cgroup
        self.bundle = self.workdir / "bundle"
        self.rootfs = self.bundle / "rootfs"
        self.state_root = self.workdir / "state"
        self.output_path = self.workdir / "output.log"
        self.userns = userns
        self.started_at: float | None = None
        self.boot_seconds: float | None = None
        self._state: dict[str, Any] = {
            "id": self.id,
            "state_root": self.state_root,
            "runtime_cmd": [runtime, "--root", str(self.state_root)],
        }
        self._finalizer = weakref.finalize(self, _cleanup, self._state)
        self.console: Console | None = None

        try:
            self._prepare(image, args, env, hostname, readonly, hooks, cgroupns, console)
        except BaseException:
            self.close()
            raise

    def _prepare(
        self,
        image: Path,
        args: Sequence[str],
        env: Sequence[str],
        hostname: str,
        readonly: bool,
        hooks: dict[str, Any] | None,
        cgroupns: bool | None,
        console: bool,
    ) -> None:
        for d in (self.rootfs, self.workdir / "upper", self.workdir / "work", self.state_root):
            d.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={image},upperdir={self.workdir / 'upper'},workdir={self.workdir / 'work'}"
        if self.userns is not None:
            opts += ",metacopy=on"  # the ownership shift below then copies no file data
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(self.rootfs)], check=True, capture_output=True
        )
        self._state["mounted"] = self.rootfs
        if self.userns is not None:
            _shift_ownership(self.rootfs, self.userns)
            # the container's root (an unprivileged uid on the host) must reach the rootfs
            for d in self.rootfs.parents:
                if not d.stat().st_mode & 0o001:
                    d.chmod(d.stat().st_mode | 0o001)

        self.config = self._make_config(
            args, env, hostname, readonly, hooks, self.cgroup == "v2" if cgroupns is None else cgroupns
        )
        # The namespace is made after the overlay mount so that it has a copy of it.
        self.ns = Namespace(self.cgroup)
        self._state["ns"] = self.ns
        if console:
            self.console = Console(self.workdir / "console.sock")
            self._state["console"] = self.console

    # -- config -------------------------------------------------------------------------

    def _make_config(
        self,
        args: Sequence[str],
        env: Sequence[str],
        hostname: str,
        readonly: bool,
        hooks: dict[str, Any] | None,
        cgroupns: bool,
    ) -> dict[str, Any]:
        subprocess.run(["runc", "spec", "--bundle", str(self.bundle)], check=True, capture_output=True)
        spec_path = self.bundle / "config.json"
        config: dict[str, Any] = json.loads(spec_path.read_text())
        spec_path.unlink()
        proc = config["process"]
        proc["terminal"] = False
        proc["args"] = list(args)
        proc["env"] = [e for e in proc["env"] if not e.startswith("TERM=")]
        proc["env"] += ["container=oci", *env]
        proc["capabilities"] = {k: list(CAPABILITIES) for k in ("bounding", "effective", "permitted")}
        proc.pop("rlimits", None)  # no CAP_SYS_RESOURCE here: runc would fail setting them
        proc["noNewPrivileges"] = False
        config["root"] = {"path": "rootfs", "readonly": readonly}
        config["hostname"] = hostname
        namespaces = ["pid", "ipc", "uts", "mount", "network"]
        if cgroupns:
            namespaces.append("cgroup")
        linux = config["linux"]
        if self.userns is not None:
            namespaces.append("user")
            mapping = [{"containerID": 0, "hostID": self.userns, "size": USERNS_SIZE}]
            linux["uidMappings"] = mapping
            linux["gidMappings"] = copy.deepcopy(mapping)
        linux["namespaces"] = [{"type": t} for t in namespaces]
        if self.runtime == "crun":
            # crun raises RLIMIT_MEMLOCK to load its eBPF device filter; without
            # CAP_SYS_RESOURCE (hard limit 8 MiB here) that fails: keep the default devices.
            linux.get("resources", {}).pop("devices", None)
        if hooks is not None:
            config["hooks"] = hooks
        return config

    def write_config(self) -> Path:
        """Write self.config to bundle/config.json (create() does it too)."""
        if self.console is not None:
            self.config["process"]["terminal"] = True
        path = self.bundle / "config.json"
        path.write_text(json.dumps(self.config, indent=2))
        return path

    # -- runtime calls ------------------------------------------------------------------

    def runtime_run(
        self, args: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `<runtime> --root STATE args...` in this container's namespace."""
        return self.ns.run([*self._state["runtime_cmd"], *args], check=check, timeout=timeout)

    def create(self, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`runtime create`: runs the prestart/createRuntime hooks. Its output (and the
        container's stdio when terminal is false) goes to ``output()``; raises
        RuntimeError on failure when `check`."""
        self.write_config()
        args = ["create", "--bundle", str(self.bundle)]
        if self.console is not None:
            args += ["--console-socket", str(self.console.path)]
        self._state["created"] = True  # even if create fails: close() makes sure
        # Without a terminal the container inherits the runtime's stdio: give it a file,
        # not a pipe that would stay open as long as the container runs.
        with open(self.output_path, "ab") as out:
            proc = subprocess.run(
                self.ns.command([*self._state["runtime_cmd"], *args, self.id]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=120,
            )
        result = subprocess.CompletedProcess(proc.args, proc.returncode, self.output(), "")
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.runtime} create failed ({proc.returncode}):\n{self.output()}")
        return result

    def output(self) -> str:
        """What the runtime's create and the container's stdout/stderr wrote so far."""
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """`runtime start`."""
        self.started_at = time.monotonic()
        self.runtime_run(["start", self.id])

    def state(self) -> dict[str, Any] | None:
        """`runtime state` as a dict, None when the container does not exist."""
        proc = self.runtime_run(["state", self.id], check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    @property
    def pid(self) -> int:
        """Host PID of the container's PID 1."""
        state = self.state()
        if not state or not state.get("pid"):
            raise RuntimeError(f"container {self.id} has no pid (state {state})")
        return int(state["pid"])

    def exec_result(self, args: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`runtime exec ID args...`; never raises for a non-zero exit."""
        return self.runtime_run(["exec", self.id, *args], check=False, timeout=timeout)

    def exec(self, args: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
        """`runtime exec ID args...`; returns stdout."""
        proc = self.exec_result(args, timeout=timeout)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc.stdout

    def wait_running(self, timeout: float = 60) -> tuple[str, str]:
        """Poll `systemctl is-system-running` until `running` or `degraded`, the container
        stops ("stopped") or the timeout passes (the last answer). Returns that word and
        `systemctl --failed --no-legend` ("" when it could not be asked)."""
        deadline = time.monotonic() + timeout
        word = ""
        while True:
            status = (self.state() or {}).get("status", "stopped")
            if status == "stopped":
                return "stopped", ""
            try:
                proc = self.exec_result(["systemctl", "is-system-running"], timeout=10)
                lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
                word = lines[-1] if lines else ""
            except subprocess.TimeoutExpired:
                word = "timeout"
            if word in ("running", "degraded"):
                if self.started_at is not None:
                    self.boot_seconds = time.monotonic() - self.started_at
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        failed = self.exec_result(["systemctl", "--failed", "--no-legend"], timeout=10)
        return word, failed.stdout.strip()

    def kill(self, sig: int | str = SIGRTMIN_3) -> None:
        """`runtime kill ID sig` (default SIGRTMIN+3: systemd halts)."""
        self.runtime_run(["kill", self.id, str(sig)])

    def wait_stopped(self, timeout: float = 30) -> bool:
        """Poll `runtime state` until stopped (or gone); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.state() or {}).get("status", "stopped") == "stopped":
                return True
            time.sleep(0.1)
        return False

    def delete(self) -> None:
        """`runtime delete --force ID` (runs the poststop hooks)."""
        if self._state.get("created"):
            proc = self.runtime_run(["delete", "--force", self.id], check=False)
            self._state["created"] = False
            if proc.returncode != 0 and "does not exist" not in proc.stderr:
                raise RuntimeError(f"delete failed: {proc.stderr.strip()}")

    def console_text(self) -> str:
        """The console output so far ("" unless console=True); all of it once stopped."""
        if self.console is None:
            return ""
        stopped = (self.state() or {}).get("status", "stopped") == "stopped"
        return self.console.text(wait=2 if stopped else 0)

    def close(self) -> None:
        """Delete the container, end its namespace, unmount its rootfs. Idempotent."""
        self._finalizer()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shift_ownership(root: Path, base: int) -> None:
    """Add `base` to the uid and gid of every file under `root` (for a user namespace
    mapping container 0 → host `base`). Does not follow symlinks or leave the filesystem."""
    dev = root.stat().st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            os.lchown(path, st.st_uid + base, st.st_gid + base)
            mode = st.st_mode & 0o7777
            if mode & 0o6000 and not os.path.islink(path):
                os.chmod(path, mode)  # chown drops setuid/setgid bits
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == dev]
    st = os.lstat(root)
    os.lchown(root, st.st_uid + base, st.st_gid + base)


@pytest.fixture
def make_container(tmp_path: Path) -> Iterator[Callable[..., Container]]:
    """Factory fixture: make_container(**kwargs) -> Container in its own tmp dir; all of
    them are closed after the test, whatever its outcome."""
    made: list[Container] = []

    def make(**kwargs: Any) -> Container:
        c = Container(tmp_path / f"c{len(made)}", **kwargs)
        made.append(c)
        return c

    yield make
    errors = []
    for c in reversed(made):
        try:
            c.close()
        except Exception as e:  # close them all, then report
            errors.append(e)
    if errors:
        raise errors[0]
