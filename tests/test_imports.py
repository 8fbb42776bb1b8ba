"""What the hook imports on its start paths: the cost of the hook is mostly its imports.

Each case runs the hook's `main` in a fresh `python -I -S` (as the launcher does) and records
`sorted(sys.modules)` at exit. No timing here (see bench/bench.py); no root needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.fakecontainer import REPO, minimal_rootfs

#: Never on the skip path (a container that is not a systemd container: most containers).
SKIP_FORBIDDEN = {"json", "re", "ctypes", "socket", "argparse", "typing", "dataclasses", "enum", "hashlib",
                  "shutil", "jsonschema", "selinux", "subprocess", "pathlib", "tempfile", "logging"}
#: Never in poststop when there is nothing to unmount.
POSTSTOP_FORBIDDEN = {"ctypes", "json", "re", "subprocess"}
#: Never in prestart.
PRESTART_FORBIDDEN = {"subprocess", "json", "re", "jsonschema", "selinux", "typing", "ctypes"}

#: The package's modules on the skip path, exactly: a new one here is a review question.
SKIP_PACKAGE_MODULES = {
    "oci_systemd_hook",
    "oci_systemd_hook.activation",
    "oci_systemd_hook.api",
    "oci_systemd_hook.cli",
    "oci_systemd_hook.errors",
    "oci_systemd_hook.ids",
    "oci_systemd_hook.jsonlite",
    "oci_systemd_hook.log",
    "oci_systemd_hook.ocistate",
    "oci_systemd_hook.settings",
    "oci_systemd_hook.spec",
}

# The launcher's body (tests/hookwiring.write_launcher), with the module list dumped at exit,
# whatever way main ends.
RUNNER = """\
import sys
sys.path.insert(0, {repo!r})
out = sys.argv[1]
sys.argv = ["oci-systemd-hook", *sys.argv[2:]]
try:
    from oci_systemd_hook.cli import main
    rc = main()
finally:
    with open(out, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
sys.exit(rc)
"""

ENV = {"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""}  # as a runtime runs hooks (no environment), but no syslog


def run_hook(tmp_path: Path, args: list[str], state: dict[str, object],
             env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / "modules.txt"
    argv = [sys.executable, "-I", "-S", "-c", RUNNER.format(repo=str(REPO)), str(out), *args]
    res = subprocess.run(argv, input=json.dumps(state), capture_output=True, text=True, timeout=60,
                         env=ENV if env is None else env)
    assert out.exists(), res.stderr
    return res, set(out.read_text().split("\n"))


def bundle(tmp_path: Path, args: list[str]) -> Path:
    b = tmp_path / "bundle"
    minimal_rootfs(b / "rootfs")
    config = {"ociVersion": "1.0.2", "process": {"args": args, "env": ["PATH=/usr/bin:/bin", "container=oci"]},
              "root": {"path": "rootfs"}, "mounts": [],
              "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}}
    (b / "config.json").write_text(json.dumps(config))
    return b


def dirs(tmp_path: Path) -> list[str]:
    return [f"--state-dir={tmp_path / 'state'}", f"--journal-root={tmp_path / 'journal'}"]


def package(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "oci_systemd_hook" or m.startswith("oci_systemd_hook.")}


def test_bare_interpreter_imports_none_of_them(tmp_path: Path) -> None:
    """The forbidden lists mean something: `python -I -S` itself loads none of those modules."""
    res = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, env=ENV, check=True)
    assert not set(res.stdout.split()) & (SKIP_FORBIDDEN | POSTSTOP_FORBIDDEN | PRESTART_FORBIDDEN)


def test_skip_path(tmp_path: Path) -> None:
    b = bundle(tmp_path, ["/bin/sh"])
    state = {"ociVersion": "1.0.2", "id": "osh-imports-skip", "status": "creating", "pid": os.getpid(),
             "bundle": str(b)}
    res, modules = run_hook(tmp_path, ["prestart", *dirs(tmp_path)], state)
    assert (res.returncode, res.stderr) == (0, "")
    assert not (tmp_path / "state").exists(), "the hook acted on a non-systemd container"
    assert sorted(modules & SKIP_FORBIDDEN) == []
    assert package(modules) == SKIP_PACKAGE_MODULES


def test_skip_path_without_stage_word(tmp_path: Path) -> None:
    """Wired without a stage argument (stage from the state): the same light path."""
    b = bundle(tmp_path, ["/bin/sh"])
    state = {"ociVersion": "1.0.2", "id": "osh-imports-skip", "status": "creating", "pid": os.getpid(),
             "bundle": str(b)}
    res, modules = run_hook(tmp_path, dirs(tmp_path), state)
    assert (res.returncode, res.stderr) == (0, "")
    assert sorted(modules & SKIP_FORBIDDEN) == []
    assert package(modules) == SKIP_PACKAGE_MODULES


@pytest.mark.parametrize("args", [["/sbin/init"], ["/bin/sh"]], ids=["systemd-bundle", "other-bundle"])
def test_poststop_without_record(tmp_path: Path, args: list[str]) -> None:
    """As podman runs it: no pid, status stopped, an empty environment; no prestart ran."""
    b = bundle(tmp_path, args)
    state = {"ociVersion": "1.0.2", "id": "osh-imports-post", "status": "stopped", "bundle": str(b)}
    res, modules = run_hook(tmp_path, ["poststop", *dirs(tmp_path)], state, env={})
    assert (res.returncode, res.stderr) == (0, "")
    assert sorted(modules & POSTSTOP_FORBIDDEN) == []


def test_poststop_of_a_gone_bundle(tmp_path: Path) -> None:
    state = {"ociVersion": "1.0.2", "id": "osh-imports-post", "status": "stopped",
             "bundle": str(tmp_path / "gone")}
    res, modules = run_hook(tmp_path, ["poststop", *dirs(tmp_path)], state, env={})
    assert (res.returncode, res.stderr) == (0, "")
    assert sorted(modules & POSTSTOP_FORBIDDEN) == []


def test_poststop_with_a_record_and_nothing_mounted(tmp_path: Path) -> None:
    """The usual poststop: prestart left its record, nothing propagated to the host."""
    b = bundle(tmp_path, ["/sbin/init"])
    cid = "osh-imports-post"
    state_dir = tmp_path / "state" / cid
    state_dir.mkdir(parents=True)
    record = {"rootfs": str(b / "rootfs"), "mounted": [str(b / "rootfs" / "run")],
              "planned": [str(b / "rootfs" / "tmp")], "journal_mode": "keep"}
    (state_dir / "record.json").write_text(json.dumps(record))
    state = {"ociVersion": "1.0.2", "id": cid, "status": "stopped", "bundle": str(b)}
    res, modules = run_hook(tmp_path, ["poststop", *dirs(tmp_path)], state, env={})
    assert (res.returncode, res.stderr) == (0, "")
    assert not state_dir.exists(), "poststop removes its state directory"
    assert sorted(modules & POSTSTOP_FORBIDDEN) == []


@pytest.mark.parametrize("extra", [[], ["--json"]], ids=["text", "json"])
def test_dry_run_prestart(tmp_path: Path, extra: list[str]) -> None:
    """prestart up to its plan (no root needed): everything but the mounts themselves."""
    b = bundle(tmp_path, ["/sbin/init"])
    (tmp_path / "journal").mkdir()
    state = {"ociVersion": "1.0.2", "id": "osh-imports-pre", "status": "creating", "pid": os.getpid(),
             "bundle": str(b)}
    res, modules = run_hook(tmp_path, ["prestart", "--dry-run", *extra, *dirs(tmp_path)], state)
    assert res.returncode == 0, res.stderr
    assert "not a systemd container" not in res.stdout
    if extra:
        assert isinstance(json.loads(res.stdout), dict)
    assert "oci_systemd_hook.plan" in modules
    assert sorted(modules & PRESTART_FORBIDDEN) == []


def test_jsonschema_words_errors_and_only_errors(tmp_path: Path) -> None:
    """A refused config.json loads jsonschema (from the -S launcher too) to name the exact element;
    a valid one never does."""
    b = bundle(tmp_path, ["/sbin/init", 5])  # process.args[1] is not a string
    state = {"ociVersion": "1.0.2", "id": "osh-imports-bad", "status": "creating", "pid": os.getpid(),
             "bundle": str(b)}
    res, modules = run_hook(tmp_path, ["prestart", *dirs(tmp_path)], state)
    assert res.returncode == 2
    assert 'config.json: "process.args[1]" must be a string, got an integer' in res.stderr
    assert "jsonschema" in modules
    good = bundle(tmp_path / "good", ["/bin/sh"])
    res, modules = run_hook(tmp_path, ["prestart", *dirs(tmp_path)], {**state, "bundle": str(good)})
    assert res.returncode == 0 and "jsonschema" not in modules


@pytest.mark.root
def test_real_prestart_and_its_poststop(tmp_path: Path) -> None:
    """The whole prestart, mounts included: `_ctypes`, never `ctypes` or `typing`."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts)")
    from tests.fakecontainer import FakeContainer

    with FakeContainer(tmp_path / "c") as c:
        res, modules = run_hook(tmp_path, ["prestart", *c.hook_args()], c.state())
        assert res.returncode == 0, res.stderr
        assert (c.state_dir / c.name).is_dir()
        assert "_ctypes" in modules and "oci_systemd_hook.linux" in modules
        assert sorted(modules & PRESTART_FORBIDDEN) == []
    res, modules = run_hook(tmp_path, ["poststop", *c.hook_args()], c.state(pid=None, status="stopped"))
    assert res.returncode == 0, res.stderr
    assert sorted(modules & POSTSTOP_FORBIDDEN) == []


RUNTIME_RUNNER = """\
import sys
sys.path.insert(0, {repo!r})
out = sys.argv[1]
try:
    from oci_systemd_hook import runtime
    runtime.prepare(runtime.parse_runc_args(sys.argv[2:]), "/usr/libexec/oci/hooks.d/oci-systemd-hook")
finally:
    with open(out, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
"""


def test_runtime_wrapper_create_path(tmp_path: Path) -> None:
    """oci-systemd-runtime's edit of config.json: as cheap as the skip path, plus writing."""
    b = bundle(tmp_path, ["/sbin/init"])
    out = tmp_path / "modules.txt"
    subprocess.run([sys.executable, "-I", "-S", "-c", RUNTIME_RUNNER.format(repo=str(REPO)), str(out),
                    "create", "--bundle", str(b), "c1"], check=True, env=ENV)
    modules = set(out.read_text().split("\n"))
    assert "hooks" in json.loads((b / "config.json").read_text())
    assert sorted(modules & SKIP_FORBIDDEN) == []
    assert package(modules) <= SKIP_PACKAGE_MODULES | {"oci_systemd_hook.runtime"}


@pytest.mark.root
def test_prestart_with_the_notify_relay(tmp_path: Path) -> None:
    """NOTIFY_SOCKET=/run/host/notify: the relay is spawned, nothing heavy is imported for it."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts)")
    from tests.fakecontainer import FakeContainer

    config = {"process": {"args": ["/sbin/init"], "env": ["PATH=/usr/bin:/bin", "NOTIFY_SOCKET=/run/host/notify"]}}
    with FakeContainer(tmp_path / "c", config=config) as c:
        res, modules = run_hook(tmp_path, ["prestart", *c.hook_args()], c.state())
        assert res.returncode == 0, res.stderr
        assert "oci_systemd_hook.notifyrelay" in modules
        assert sorted(modules & (PRESTART_FORBIDDEN | {"socket", "select", "enum"})) == []
    res, _ = run_hook(tmp_path, ["poststop", *c.hook_args()], c.state(pid=None, status="stopped"))
    assert res.returncode == 0, res.stderr


@pytest.mark.root
def test_prestart_with_syslog_and_the_notify_relay_loads_no_socket_module(tmp_path: Path) -> None:
    """libc is bound for the mounts anyway: syslog and the relay's socket go through it, and
    neither `_socket` nor `socket` is imported on the start path (they cost a millisecond)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts)")
    import socket

    from tests.fakecontainer import FakeContainer

    listen = tempfile.mkdtemp(prefix="osh", dir="/tmp") + "/log"  # AF_UNIX: pytest's tmp path is too long
    config = {"process": {"args": ["/sbin/init"], "env": ["PATH=/usr/bin:/bin", "NOTIFY_SOCKET=/run/host/notify"]}}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx, FakeContainer(tmp_path / "c", config=config) as c:
        rx.bind(listen)
        rx.settimeout(10)
        res, modules = run_hook(tmp_path, ["prestart", *c.hook_args()], c.state(),
                                env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": listen})
        assert res.returncode == 0, res.stderr
        assert (c.state_dir / c.name / "notify").is_socket()
        assert "prepared for systemd" in rx.recv(4096).decode()
        assert sorted(modules & {"_socket", "socket", "ctypes"}) == []
        assert c.poststop().returncode == 0
    os.unlink(listen)
    os.rmdir(os.path.dirname(listen))
