"""Bad input, end to end: the hook run as a real subprocess against a live fake container.

Every case feeds the hook something wrong (state on stdin, config.json, arguments,
environment) and checks what a runtime and an operator see:

- the exit status: 2 for bad input (the state, config.json, the arguments, the image),
  0 where ignoring is right (a container the hook does not act on; a stage with
  nothing to do);
- stderr: empty for exit 0, else exactly one line starting with "oci-systemd-hook:"
  that names the offending field or thing, and never a traceback or "internal error";
- nothing happened: the container's mount table and the host's are unchanged, and
  neither a state directory nor a journal directory was created.

A few inputs look odd but are valid (legacy `bundlePath`, a relative `root.path`, the id
"-rf"): those must work, and poststop must undo them.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oci_systemd_hook.ids import machine_id_for, short_id
from tests.fakecontainer import FakeContainer, Tables, container_table, host_table, needs_root, tables, with_export

pytestmark = [needs_root, pytest.mark.root]

QUIET = {"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""}
def assert_one_error_line(stderr: str, *needles: str) -> str:
    """Exactly one line, our prefix, naming each of `needles` (case-insensitive)."""
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), f"expected one line, got {stderr!r}"
    line = lines[0]
    assert line.startswith("oci-systemd-hook:"), line
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not named in {line!r}"
    return line


def assert_nothing_done(c: FakeContainer, before: Tables) -> None:
    assert container_table(c) == before[0], "the container's mount table changed"
    assert host_table(c.tmp) == before[1], "the host's mount table changed"
    assert not c.state_dir.exists() or not any(c.state_dir.iterdir()), "a state directory was created"
    assert list(c.journal_root.iterdir()) == [], "a journal directory was created"


# --- the corpus ------------------------------------------------------------------------------------

Setup = Callable[[FakeContainer], None]


@dataclass
class Case:
    name: str
    code: int  # 0: ignored (nothing to do), 2: bad input
    needles: tuple[str, ...] = ()  # what the error line must mention
    stdin: Callable[[FakeContainer], bytes] | None = None  # raw stdin (default: c.state() as JSON)
    setup: Setup | None = None  # changes to the bundle before the run
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    stage: str | None = "prestart"
    marks: tuple[pytest.MarkDecorator, ...] = ()


def raw(data: bytes) -> Callable[[FakeContainer], bytes]:
    return lambda c: data


def state(drop: tuple[str, ...] = (), **override: object) -> Callable[[FakeContainer], bytes]:
    """The container's normal state with fields replaced or dropped."""

    def make(c: FakeContainer) -> bytes:
        s: dict[str, object] = {"ociVersion": "1.0.2", "id": c.name, "status": "creating", "pid": c.pid,
                                "bundle": str(c.bundle)}
        s.update(override)
        for key in drop:
            s.pop(key, None)
        return json.dumps(s).encode()

    return make


def config(**update: object) -> Setup:
    """Replace top-level keys of config.json (None deletes one)."""

    def setup(c: FakeContainer) -> None:
        for key, value in update.items():
            if value is None:
                c.config.pop(key, None)
            else:
                c.config[key] = value
        c.write_config()

    return setup


def linux(**update: object) -> Setup:
    def setup(c: FakeContainer) -> None:
        section = dict(c.config["linux"])  # type: ignore[call-overload]
        section.update(update)
        c.config["linux"] = section
        c.write_config()

    return setup


def config_bytes(data: bytes) -> Setup:
    def setup(c: FakeContainer) -> None:
        (c.bundle / "config.json").write_bytes(data)

    return setup


def config_is_dir(c: FakeContainer) -> None:
    (c.bundle / "config.json").unlink()
    (c.bundle / "config.json").mkdir()


def config_is_fifo(c: FakeContainer) -> None:
    (c.bundle / "config.json").unlink()
    os.mkfifo(c.bundle / "config.json")


def config_missing(c: FakeContainer) -> None:
    (c.bundle / "config.json").unlink()


def root_is_file(c: FakeContainer) -> None:
    (c.bundle / "afile").write_text("not a directory\n")
    config(root={"path": "afile"})(c)


def dead_pid_state(c: FakeContainer) -> bytes:
    p = subprocess.Popen(["true"])
    p.wait()  # reaped: the pid names nothing now
    return state(pid=p.pid)(c)


INIT = ["/sbin/init"]

CASES = [
    # stdin that is not a state at all
    Case("stdin-empty", 2, ("no OCI state", "stdin"), raw(b"")),
    Case("stdin-whitespace", 2, ("no OCI state",), raw(b" \n\t\r\n  ")),
    Case("stdin-not-json", 2, ("not valid JSON",), raw(b"id=abc pid=1")),
    Case("stdin-truncated-json", 2, ("not valid JSON",), raw(b'{"id": "abc", "pid": 1')),
    Case("stdin-unterminated-string", 2, ("not valid JSON",), raw(b'{"id": "abc')),
    Case("stdin-missing-colon", 2, ("not valid JSON",), raw(b'{"id" "abc"}')),
    Case("stdin-control-char", 2, ("not valid JSON",), raw(b'{"id": "a\tb"}')),
    Case("stdin-trailing-garbage", 2, ("not valid JSON", "extra data"), raw(b'{"id": "abc"} {}')),
    Case("stdin-array", 2, ("JSON object", "array"), raw(b'[{"id": "abc"}]')),
    Case("stdin-string", 2, ("JSON object", "string"), raw(b'"abc"')),
    Case("stdin-null", 2, ("JSON object", "null"), raw(b"null")),
    Case("stdin-nan", 2, ("not valid JSON",), raw(b'{"id": "abc", "pid": NaN}')),
    Case("stdin-over-1MiB", 2, ("stdin", "larger than"),
         lambda c: state()(c) + b" " * (1 << 20)),
    Case("stdin-invalid-utf8", 2, ("not valid JSON", "UTF-8"),
         lambda c: state(status="\x00")(c).replace(b"\\u0000", b"\xff\xfe")),
    Case("stdin-nested-100000-arrays", 2, ("not valid JSON", "nested"), raw(b"[" * 100000)),
    Case("stdin-nested-100000-objects", 2, ("not valid JSON",), raw(b'{"a":' * 100000)),
    # id
    Case("id-missing", 2, ('"id"',), state(drop=("id",))),
    Case("id-integer", 2, ('"id"',), state(id=12345)),
    Case("id-empty", 2, ('"id"',), state(id="")),
    Case("id-slash", 2, ('"id"', '"a/b"', "may only contain"), state(id="a/b")),
    Case("id-dotdot", 2, ('"id"',), state(id="..")),
    Case("id-dot", 2, ('"id"',), state(id=".")),
    Case("id-NUL", 2, ('"id"',), state(id="abc\x00def")),
    Case("id-newline", 2, ('"id"',), state(id="abc\ndef")),
    Case("id-300-chars", 2, ('"id"', "300"), state(id="a" * 300)),
    # pid
    Case("pid-string", 2, ('"pid"', "integer"), lambda c: state(pid=str(c.pid))(c)),
    Case("pid-float", 2, ('"pid"', "integer"), lambda c: state(pid=c.pid + 0.5)(c)),
    Case("pid-bool", 2, ('"pid"', "integer"), state(pid=True)),
    Case("pid-negative", 2, ('"pid"', "-5"), state(pid=-5)),
    Case("pid-huge", 2, ('"pid"', str(1 << 40)), state(pid=1 << 40)),
    Case("pid-0-at-prestart", 2, ('"pid"',), state(pid=0)),
    Case("pid-missing-at-prestart", 2, ('"pid"',), state(drop=("pid",))),
    Case("pid-dead", 2, ("does not exist",), dead_pid_state),
    # bundle
    Case("bundle-missing", 2, ('"bundle"', "missing"), state(drop=("bundle",))),
    Case("bundle-relative", 2, ('"bundle"', "absolute"), state(bundle="bundle")),
    Case("bundle-not-a-string", 2, ('"bundle"', "string"), state(bundle=["/"])),
    Case("bundle-NUL", 2, ('"bundle"',), lambda c: state(bundle=str(c.bundle) + "\x00x")(c)),
    Case("bundle-nonexistent", 2, ("config.json", "No such file"), lambda c: state(bundle=str(c.tmp / "nope"))(c)),
    Case("bundle-lone-surrogate", 2, ('"bundle"',), lambda c: state(bundle=str(c.bundle) + "\ud800")(c)),
    # status, annotations, ociVersion
    Case("status-integer", 2, ('"status"',), state(status=3)),
    Case("annotations-string", 2, ('"annotations"',), state(annotations="enable")),
    Case("annotations-array", 2, ('"annotations"',), state(annotations=["a=b"])),
    Case("annotations-empty-array", 2, ('"annotations"',), state(annotations=[])),
    Case("annotations-false", 2, ('"annotations"',), state(annotations=False)),
    Case("annotations-value-not-string", 2, ('"annotations.a"', "string"), state(annotations={"a": 1})),
    Case("ociVersion-integer", 2, ('"ociVersion"',), state(ociVersion=1)),
    # config.json as a file
    Case("config-missing", 2, ("config.json", "No such file"), setup=config_missing),
    Case("config-empty", 2, ("config.json", "not valid JSON"), setup=config_bytes(b"")),
    Case("config-corrupt", 2, ("config.json", "not valid JSON"), setup=config_bytes(b'{"process": {"args": [')),
    Case("config-trailing-comma", 2, ("config.json", "not valid JSON"),
         setup=config_bytes(b'{"process": {"args": ["/sbin/init"],}, "root": {"path": "rootfs"}}')),
    Case("config-invalid-utf8", 2, ("config.json", "UTF-8"), setup=config_bytes(b'{"a": "\xff"}')),
    Case("config-directory", 2, ("config.json", "not a regular file"), setup=config_is_dir),
    Case("config-fifo", 2, ("config.json", "not a regular file"), setup=config_is_fifo),
    Case("config-array", 2, ("config.json", "object", "array"), setup=config_bytes(b"[]")),
    Case("config-nested-deep", 2, ("config.json", "not valid JSON"), setup=config_bytes(b"[" * 100000)),
    # config.json fields
    Case("root-missing", 2, ('"root"', "missing"), setup=config(root=None)),
    Case("root-not-object", 2, ('"root"', "object"), setup=config(root="rootfs")),
    Case("root.path-missing", 2, ('"root.path"',), setup=config(root={})),
    Case("root.path-empty", 2, ('"root.path"',), setup=config(root={"path": ""})),
    Case("root.path-not-string", 2, ('"root.path"', "an integer"), setup=config(root={"path": 7})),
    Case("root.path-a-file", 2, ("container root", "afile", "not a directory"), setup=root_is_file),
    Case("root.path-nonexistent", 2, ("container root", "nothere"), setup=config(root={"path": "nothere"})),
    Case("process-not-object", 2, ('"process"', "object"), setup=config(process=["/sbin/init"])),
    Case("process.args-empty", 0, setup=config(process={"args": []})),
    Case("process.args-missing", 0, setup=config(process={"env": ["A=b"]})),
    Case("process.args-not-strings", 2, ('"process.args[1]"',), setup=config(process={"args": ["/sbin/init", 5]})),
    Case("process.args-a-string", 2, ('"process.args"',), setup=config(process={"args": "/sbin/init"})),
    Case("process.env-not-strings", 2, ('"process.env[1]"',),
         setup=config(process={"args": INIT, "env": ["A=b", None]})),
    Case("mounts-not-a-list", 2, ('"mounts"',), setup=config(mounts={"destination": "/run"})),
    Case("mounts-entry-not-object", 2, ('"mounts[0]"',), setup=config(mounts=["/run"])),
    Case("mounts-0-without-destination", 2, ('"mounts[0].destination"',),
         setup=config(mounts=[{"type": "tmpfs", "source": "tmpfs"}])),
    Case("mounts-1-destination-empty", 2, ('"mounts[1].destination"',),
         setup=config(mounts=[{"destination": "/a"}, {"destination": ""}])),
    Case("mounts-options-not-strings", 2, ('"mounts[0].options[0]"',),
         setup=config(mounts=[{"destination": "/a", "options": [1]}])),
    Case("uidMappings-not-a-list", 2, ('"linux.uidMappings"',),
         setup=linux(uidMappings={"containerID": 0, "hostID": 1000, "size": 1})),
    Case("uidMappings-entry-not-object", 2, ('"linux.uidMappings[0]"',), setup=linux(uidMappings=[0])),
    Case("uidMappings-id-string", 2, ('"linux.uidMappings[0].containerID"',),
         setup=linux(uidMappings=[{"containerID": "0", "hostID": 1000, "size": 1}])),
    Case("uidMappings-size-missing", 2, ('"linux.uidMappings[0].size"', "is missing"),
         setup=linux(uidMappings=[{"containerID": 0, "hostID": 1000}])),
    Case("gidMappings-negative", 2, ('"linux.gidMappings[0].',),
         setup=linux(gidMappings=[{"containerID": 0, "hostID": -1, "size": 1}])),
    Case("namespaces-type-missing", 2, ('"linux.namespaces[0].type"',), setup=linux(namespaces=[{}])),
    Case("config-annotations-not-object", 2, ('"annotations"',), setup=config(annotations=["x"])),
    # activation and knobs from the container's owner
    Case("annotation-enable-maybe-in-config", 2, ("oci-systemd-hook.enable", "maybe"),
         setup=config(annotations={"oci-systemd-hook.enable": "maybe"})),
    Case("annotation-enable-maybe-in-state", 2, ("oci-systemd-hook.enable", "maybe"),
         state(annotations={"oci-systemd-hook.enable": "maybe"})),
    Case("annotation-tmp-size-lots", 2, ("oci-systemd-hook.tmp-size", "lots"),
         setup=config(annotations={"oci-systemd-hook.tmp-size": "lots"})),
    Case("annotation-journal-sometimes", 2, ("oci-systemd-hook.journal", "sometimes"),
         state(annotations={"oci-systemd-hook.journal": "sometimes"})),
    # the command line and the environment
    Case("arg-tmp-size-lots", 2, ("--tmp-size", "lots"), args=["--tmp-size=lots"]),
    Case("arg-run-size-zero", 2, ("--run-size", "0"), args=["--run-size", "0"]),
    Case("arg-journal-sometimes", 2, ("--journal", "sometimes"), args=["--journal=sometimes"]),
    Case("arg-state-dir-relative", 2, ("--state-dir", "relative"), args=["--state-dir=relative"]),
    Case("arg-debug-maybe", 2, ("--debug", "maybe"), args=["--debug=maybe"]),
    Case("arg-value-missing", 2, ("--journal-root", "value"), args=["--journal-root"]),
    Case("arg-unknown-option", 2, ("unknown option", "--frobnicate"), args=["--frobnicate"]),
    Case("arg-switch-with-value", 2, ("--dry-run",), args=["--dry-run=yes"]),
    Case("arg-unknown-stage", 2, ("unknown stage", "prestop"), stage="prestop"),
    Case("arg-extra-word", 2, ("unexpected argument", "again"), args=["again"]),
    Case("arg-createContainer", 2, ("createContainer", "prestart or createRuntime"), stage="createContainer"),
    Case("arg-startContainer", 2, ("startContainer",), stage="startContainer"),
    Case("env-stage-unknown", 2, ("unknown stage", "bogus"), stage=None, env={"stage": "bogus"}),
    Case("env-knob-journal-sometimes", 2, ("OCI_SYSTEMD_HOOK_JOURNAL", "sometimes"),
         env={"OCI_SYSTEMD_HOOK_JOURNAL": "sometimes"}),
    Case("env-knob-state-dir-relative", 2, ("OCI_SYSTEMD_HOOK_STATE_DIR",),
         env={"OCI_SYSTEMD_HOOK_STATE_DIR": "run/x"}),
    # stages with nothing to do
    Case("stage-poststart", 0, stage="poststart"),
    Case("pid-0-without-stage-is-poststop", 0, stdin=state(pid=0), stage=None),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    with FakeContainer(tmp_path) as c:
        if case.setup is not None:
            case.setup(c)
        before = tables(c)
        data = (case.stdin or state())(c)
        started = time.monotonic()
        res = c.run_hook(case.stage, stdin=data, args=case.args, env={**QUIET, **case.env}, timeout=20)
        elapsed = time.monotonic() - started
        assert res.returncode == case.code, res.stderr
        if case.code == 0:
            assert res.stderr == ""
        else:
            assert_one_error_line(res.stderr, *case.needles)
        assert_nothing_done(c, before)
        assert elapsed < 10


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


# --- pids in the hook's own mount namespace ---------------------------------------------------------

def test_hooks_own_pid_is_refused(tmp_path: Path) -> None:
    """The state names the hook process itself: `exec` keeps the shell's pid, which the
    here-document has already written into the state."""
    with FakeContainer(tmp_path) as c:
        before = tables(c)
        argv = [sys.executable, "-I", "-m", "oci_systemd_hook", "prestart", *c.hook_args()]
        body = json.dumps(c.state(pid=123456789)).replace("123456789", "$$")
        script = f"exec {shlex.join(argv)} <<EOF\n{body}\nEOF\n"
        res = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=QUIET, timeout=20)
        assert res.returncode == 2, res.stderr
        line = assert_one_error_line(res.stderr, "refusing", "mount namespace")
        pid = int(line.split("process ", 1)[1].split()[0])
        assert pid not in (1, os.getpid(), c.pid)  # it was the hook's own
        assert_nothing_done(c, before)


def test_pid_1_is_refused(tmp_path: Path) -> None:
    """PID 1 shares the hook's mount namespace here. Where the hook may not even open its
    namespace (PID 1 has capabilities the hook lacks: not ptrace-able), it must still refuse."""
    with FakeContainer(tmp_path) as c:
        before = tables(c)
        res = c.run_hook(state=c.state(pid=1))
        try:
            os.close(os.open("/proc/1/ns/mnt", os.O_RDONLY))
            readable = True
        except PermissionError:
            readable = False
        if readable:
            assert res.returncode == 2, res.stderr
            assert_one_error_line(res.stderr, "process 1", "refusing", "mount namespace")
        else:
            assert res.returncode in (1, 2), res.stderr
            assert_one_error_line(res.stderr, "/proc/1/ns/mnt", "Permission denied")
        assert_nothing_done(c, before)


def test_test_runners_pid_is_refused(tmp_path: Path) -> None:
    with FakeContainer(tmp_path) as c:
        before = tables(c)
        res = c.run_hook(state=c.state(pid=os.getpid()))
        assert res.returncode == 2
        assert_one_error_line(res.stderr, "refusing", "mount over the host")
        assert_nothing_done(c, before)


# --- odd but valid --------------------------------------------------------------------------------

def _works_and_undoes(c: FakeContainer, st: dict[str, object], cid: str) -> None:
    host_before = host_table(c.tmp)
    res = c.run_hook(state=st)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    run = c.mount_at("/run")
    assert run is not None and run.fstype == "tmpfs"
    assert c.inside("/etc/machine-id").read_text() == machine_id_for(cid) + "\n"
    assert (c.state_dir / cid / "record.json").is_file()
    assert host_table(c.tmp) == with_export(host_before, c, cid)
    stopped = {k: v for k, v in st.items() if k != "pid"}
    stopped["status"] = "stopped"
    res = c.run_hook("poststop", stopped, env={})
    assert res.returncode == 0, res.stderr
    assert list(c.state_dir.iterdir()) == []
    assert host_table(c.tmp) == host_before


def test_legacy_bundlePath_works(tmp_path: Path) -> None:
    with FakeContainer(tmp_path) as c:
        st = c.state()
        st["bundlePath"] = st.pop("bundle")
        _works_and_undoes(c, st, c.name)


@pytest.mark.parametrize("path", ["../bundle/./rootfs/", "./rootfs", "absolute"])
def test_root_path_relative_to_bundle_works(tmp_path: Path, path: str) -> None:
    with FakeContainer(tmp_path) as c:
        config(root={"path": str(c.rootfs) if path == "absolute" else path})(c)
        _works_and_undoes(c, c.state(), c.name)


def test_id_dash_rf_is_just_a_name(tmp_path: Path) -> None:
    """runc accepts "-rf"; it is never an option to anything, and poststop removes only its own dir."""
    with FakeContainer(tmp_path) as c:
        c.state_dir.mkdir()
        (c.state_dir / "other").mkdir()
        (c.state_dir / "other" / "keep").write_text("x")
        res = c.run_hook(state=c.state(id="-rf"))
        assert res.returncode == 0, res.stderr
        assert res.stderr == ""
        assert (c.state_dir / "-rf" / "machine-id").read_text() == machine_id_for("-rf") + "\n"
        assert c.inside("/etc/machine-id").read_text() == machine_id_for("-rf") + "\n"
        res = c.run_hook("poststop", c.state(id="-rf", pid=None, status="stopped"), env={})
        assert res.returncode == 0, res.stderr
        assert sorted(p.name for p in c.state_dir.iterdir()) == ["other"]
        assert (c.state_dir / "other" / "keep").read_text() == "x"


# --- stdin that does not end ------------------------------------------------------------------------

def test_100MiB_stdin_is_not_read_whole(tmp_path: Path) -> None:
    """A runaway writer: the hook stops after its limit instead of reading (or buffering) it all."""
    with FakeContainer(tmp_path) as c:
        before = tables(c)
        argv = [sys.executable, "-I", "-m", "oci_systemd_hook", "prestart", *c.hook_args()]
        errfile = tmp_path / "stderr"
        written = 0
        chunk = b"[" + b" " * ((1 << 20) - 1)
        started = time.monotonic()
        with errfile.open("wb") as errf:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errf, env=QUIET)

            def writer() -> None:
                nonlocal written
                assert proc.stdin is not None
                try:
                    for _ in range(100):
                        proc.stdin.write(chunk)
                        written += len(chunk)
                    proc.stdin.close()
                except (BrokenPipeError, ValueError):
                    pass

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            try:
                proc.wait(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            elapsed = time.monotonic() - started
            t.join(5)
        err = errfile.read_text()
        assert proc.returncode == 2, err
        assert_one_error_line(err, "stdin", "larger than")
        assert written < 16 << 20, f"the hook swallowed {written >> 20} MiB"
        assert elapsed < 5, f"took {elapsed:.1f}s"
        assert_nothing_done(c, before)


# --- syslog -----------------------------------------------------------------------------------------

def test_error_goes_to_syslog_as_one_datagram(tmp_path: Path) -> None:
    path = str(tmp_path / "log.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    try:
        with FakeContainer(tmp_path / "c") as c:
            config_missing(c)
            res = c.run_hook(env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": path})
            assert res.returncode == 2
            line = assert_one_error_line(res.stderr, "config.json")
            rx.settimeout(5)
            msg = rx.recv(65536).decode()
            rx.setblocking(False)
            with pytest.raises(BlockingIOError):
                rx.recv(65536)  # one datagram, no more
            assert msg.startswith("<27>oci-systemd-hook["), msg
            assert f"]: {short_id(c.name)}: " in msg
            assert c.name[12:] not in msg.split("]: ", 1)[1].split(":", 1)[0], "the short id, not the full one"
            assert "config.json" in msg and "\n" not in msg
            assert line.split("error: ", 1)[1] in msg
    finally:
        rx.close()


def _stale_socket(tmp_path: Path) -> str:
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens: ECONNREFUSED
    return path


@pytest.mark.parametrize("where", ["nonexistent", "stale-socket", "regular-file", "directory"])
def test_syslog_with_no_listener_neither_fails_nor_blocks(tmp_path: Path, where: str) -> None:
    if where == "nonexistent":
        path = str(tmp_path / "no" / "such.sock")
    elif where == "stale-socket":
        path = _stale_socket(tmp_path)
    elif where == "regular-file":
        path = str(tmp_path / "file")
        Path(path).write_text("")
    else:
        path = str(tmp_path)
    env = {"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": path}
    with FakeContainer(tmp_path / "c") as c:
        started = time.monotonic()
        bad = c.run_hook(stdin=b"nope", env=env)
        good = c.run_hook(env={**env, "OCI_SYSTEMD_HOOK_DEBUG": "1"})
        elapsed = time.monotonic() - started
        assert bad.returncode == 2
        assert_one_error_line(bad.stderr, "not valid JSON")
        assert good.returncode == 0, good.stderr
        assert "Traceback" not in good.stderr
        assert c.run_hook("poststop", c.state(pid=None, status="stopped"), env=env).returncode == 0
        assert elapsed < 5


def test_syslog_with_full_receive_queue_neither_fails_nor_blocks(tmp_path: Path) -> None:
    path = str(tmp_path / "full.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx.setblocking(False)
    sent = 0
    try:
        while True:  # fill the receiver's queue without reading it
            try:
                tx.sendto(b"x" * 512, path)
                sent += 1
            except BlockingIOError:
                break
            assert sent < 1_000_000
        env = {"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": path}
        with FakeContainer(tmp_path / "c") as c:
            started = time.monotonic()
            bad = c.run_hook(stdin=b"[1]", env=env, timeout=20)
            good = c.run_hook(env={**env, "OCI_SYSTEMD_HOOK_DEBUG": "1"}, timeout=20)
            stop = c.run_hook("poststop", c.state(pid=None, status="stopped"), env=env, timeout=20)
            elapsed = time.monotonic() - started
            assert bad.returncode == 2
            assert_one_error_line(bad.stderr, "JSON object")
            assert good.returncode == 0, good.stderr
            assert c.mount_at("/run") is not None
            assert stop.returncode == 0, stop.stderr
            assert elapsed < 5, f"took {elapsed:.1f}s with a full syslog queue"
        # Nothing of ours got in: the queue was full the whole time.
        rx.setblocking(False)
        got = 0
        while True:
            try:
                assert rx.recv(4096) == b"x" * 512
                got += 1
            except BlockingIOError:
                break
        assert got == sent
    finally:
        rx.close()
        tx.close()
