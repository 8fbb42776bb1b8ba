"""Run the cached Debian image under podman with the hook from a hooks.d directory.

Not a test module. Podman gets its own storage under the image cache (the host's default
storage, /var/lib/containers, is never used), so the imported image survives between runs,
and its own run root under /run/oci-systemd-hook-test/podman. The flags are the ones this
machine needs (see /work/shared/REFERENCE.md): cgroupfs, file events, runc, no network and
explicit ulimits (CAP_SYS_RESOURCE is missing here).
"""

from __future__ import annotations

import fcntl
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests import realboot
from tests.fakecontainer import REPO

IMAGE = "localhost/osh-debian:12"
RUN_ROOT = Path("/run/oci-systemd-hook-test/podman")
LABEL = "osh-test"
#: Per-container flags: no network, and rlimits runc can set without CAP_SYS_RESOURCE.
RUN_FLAGS = ("--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096")


def storage() -> Path:
    """podman --root: next to the cached image, kept between runs."""
    return realboot.image_cache() / "podman" / "storage"


def global_flags() -> list[str]:
    return ["--root", str(storage()), "--runroot", str(RUN_ROOT / "runroot"), "--tmpdir", str(RUN_ROOT / "tmp"),
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"]


def podman(args: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `podman <global flags> args...`, capturing text output."""
    proc = subprocess.run(["podman", *global_flags(), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def ensure_image() -> None:
    """Import the cached rootfs as IMAGE once (skips the test when podman is missing)."""
    realboot.require_root()
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    storage().mkdir(parents=True, exist_ok=True)
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    with open(storage().parent / ".import.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel runs must not import twice
        if podman(["image", "exists", IMAGE], check=False).returncode == 0:
            return
        rootfs = realboot.image_rootfs("debian-12")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        # Whatever --root says, podman 4.3 writes its blob-info cache to /var/lib/containers/cache:
        # import in a private mount namespace with a throw-away /var/lib so the host's stays as is.
        isolate = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs -o mode=755 tmpfs /var/lib && exec "$@"', "sh"]
        try:
            imp = subprocess.run([*isolate, "podman", *global_flags(), "import", "-", IMAGE], stdin=tar.stdout,
                                 capture_output=True, text=True, timeout=300)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"podman import failed: {imp.stderr.strip()}")


def write_hooks_dir(directory: Path, state_dir: Path, journal_root: Path, *extra: str,
                    record: Path | None = None) -> Path:
    """A hooks.d directory made by `oci-systemd-hook install --prefix DIR` (the launcher and
    the oci-hooks 1.0.0 JSON a package ships), with the test's state and journal directories
    added to the hook's args. No stage word: podman passes none, and an empty environment.

    With `record`, a second hook (sorted first) appends every OCI state podman or the
    runtime sends, one JSON per line, to that file: proof of what the hook was given."""
    prefix = directory / "prefix"
    subprocess.run([sys.executable, "-m", "oci_systemd_hook", "install", f"--prefix={prefix}"], check=True,
                   capture_output=True, cwd=REPO)
    installed = json.loads((prefix / "share/containers/oci/hooks.d/oci-systemd-hook.json").read_text())
    launcher = Path(installed["hook"]["path"])
    assert launcher == prefix / "libexec/oci/hooks.d/oci-systemd-hook" and launcher.is_file()
    hooks_dir = directory / "hooks.d"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    if record is not None:
        (hooks_dir / "00-record.json").write_text(json.dumps({
            "version": "1.0.0",
            "hook": {"path": "/bin/sh", "args": ["sh", "-c", f'cat >> "{record}"; echo >> "{record}"']},
            "when": {"commands": ["(^|/)(init|systemd)$"]},
            "stages": ["prestart", "poststop"],
        }))
    for name in ("oci-systemd-hook.json", "oci-systemd-hook-annotation.json"):
        config = json.loads((prefix / "share/containers/oci/hooks.d" / name).read_text())
        config["hook"]["args"] += [f"--state-dir={state_dir}", f"--journal-root={journal_root}", *extra]
        path = hooks_dir / name
        path.write_text(json.dumps(config, indent=2))
        subprocess.run([sys.executable, "-m", "oci_systemd_hook", "validate", str(path)], check=True,
                       capture_output=True, cwd=REPO)
    return hooks_dir


def recorded_states(record: Path) -> list[dict[str, object]]:
    """The states the recording hook saw, in order."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def host_mounts(mine: Path) -> list[str]:
    """The host's mount points, sorted, without other tests' work directories under /tmp
    (other suites run concurrently on this machine); those under `mine` are kept."""
    keep = []
    for mp in realboot.mount_points():
        if mp.startswith("/tmp/") and not (mp + "/").startswith(f"{mine}/"):
            continue
        keep.append(mp)
    return sorted(keep)


def mountinfo_entries(text: str) -> list[dict[str, str]]:
    """Mount id, parent id, mount point, fstype, per-mount options of each mountinfo line."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        entries.append({"id": fields[0], "parent": fields[1], "root": fields[3], "mountpoint": fields[4],
                        "options": fields[5], "fstype": fields[sep + 1]})
    return entries


def top_mount(entries: list[dict[str, str]], path: str) -> dict[str, str] | None:
    """The visible mount at `path`: the one no other mount at `path` is stacked on.
    (mountinfo order is not stacking order once mounts are moved in with move_mount.)"""
    at = [e for e in entries if e["mountpoint"] == path]
    parents = {e["parent"] for e in at}
    tops = [e for e in at if e["id"] not in parents]
    return tops[-1] if tops else None


class Podman:
    """The containers of one test, all labelled with a token; `close()` removes them."""

    def __init__(self, hooks_dir: Path | None) -> None:
        self.hooks_dir = hooks_dir
        self.token = secrets.token_hex(6)
        self.ids: list[str] = []

    def run(self, *run_args: str, command: Sequence[str] = ("/sbin/init",), check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        """`podman [--hooks-dir DIR] run -d ... IMAGE command`; stdout is the full id."""
        pre = ["--hooks-dir", str(self.hooks_dir)] if self.hooks_dir is not None else []
        proc = podman([*pre, "run", "-d", "--label", f"{LABEL}={self.token}", *RUN_FLAGS, *run_args, IMAGE,
                       *command], check=False)
        cid = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if cid:
            self.ids.append(cid)
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman run failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def status(self, cid: str) -> str:
        proc = podman(["inspect", "--format", "{{.State.Status}}", cid], check=False)
        return proc.stdout.strip() if proc.returncode == 0 else "gone"

    def exec(self, cid: str, args: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
        proc = podman(["exec", cid, *args], check=check, timeout=timeout)
        return proc.stdout

    def wait_running(self, cid: str, timeout: float = 30) -> tuple[str, str]:
        """Poll `systemctl is-system-running` until running/degraded, the container stops
        ("stopped") or the timeout passes; returns that word and the failed units."""
        deadline = time.monotonic() + timeout
        word = ""
        while True:
            if self.status(cid) != "running":
                return "stopped", ""
            try:
                proc = podman(["exec", cid, "systemctl", "is-system-running"], check=False, timeout=10)
                lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
                word = lines[-1] if lines else ""
            except subprocess.TimeoutExpired:
                word = "timeout"
            if word in ("running", "degraded") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        failed = podman(["exec", cid, "systemctl", "--failed", "--no-legend"], check=False, timeout=10)
        return word, failed.stdout.strip()

    def wait_exited(self, cid: str, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status(cid) in ("exited", "stopped", "gone"):
                return True
            time.sleep(0.1)
        return False

    def leftovers(self) -> list[str]:
        """This test's containers podman still knows about."""
        proc = podman(["ps", "-a", "-q", "--no-trunc", "--filter", f"label={LABEL}={self.token}"], check=False)
        return proc.stdout.split()

    def close(self) -> None:
        for cid in [*self.ids, *self.leftovers()]:
            podman(["rm", "-f", "-t", "0", cid], check=False, timeout=60)


@pytest.fixture
def podman_env(tmp_path: Path) -> Iterator[dict[str, object]]:
    """The image imported, a hooks.d directory in tmp_path, a Podman that removes this test's
    containers afterwards (whatever the outcome) and then checks none is left."""
    ensure_image()
    state_dir, journal_root = tmp_path / "state", tmp_path / "journal"
    journal_root.mkdir()
    record = tmp_path / "states.jsonl"
    hooks_dir = write_hooks_dir(tmp_path, state_dir, journal_root, record=record)
    pm = Podman(hooks_dir)
    env: dict[str, object] = {"podman": pm, "state_dir": state_dir, "journal_root": journal_root,
                              "hooks_dir": hooks_dir, "record": record, "tmp": tmp_path}
    try:
        yield env
    finally:
        pm.close()
    assert pm.leftovers() == [], "podman rm -f left containers behind"
