"""The command line, run in-process: exit codes, one-line errors, plans printed without root."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from oci_systemd_hook import __version__, cli, jsonlite
from oci_systemd_hook.ids import machine_id_for
from oci_systemd_hook.settings import KNOBS
from tests.fakecontainer import REPO

HEX64 = "3f2a9c1be0d447a8b6e5f4c3d2a1b0c98f7e6d5c4b3a29180716253443526170"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OCI_SYSTEMD_HOOK_") or name in ("stage", "container_uuid"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OCI_SYSTEMD_HOOK_SYSLOG_SOCKET", "")
    set_stdin(monkeypatch, b"")


def set_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))


def make_bundle(path: Path, args: list[str] | None = None, **extra: Any) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "rootfs").mkdir(exist_ok=True)
    obj: dict[str, Any] = {"ociVersion": "1.0.2", "process": {"args": args or ["/sbin/init"], "env": ["PATH=/bin"]},
                           "root": {"path": "rootfs"}, "mounts": [{"destination": "/proc", "type": "proc"}]}
    obj.update(extra)
    (path / "config.json").write_text(jsonlite.dumps(obj))
    return path


def state_json(bundle: Path | str, cid: str = HEX64, **fields: Any) -> str:
    obj: dict[str, Any] = {"ociVersion": "1.0.2", "id": cid, "status": "creating", "pid": 999999, "bundle": str(bundle)}
    for key, value in fields.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    return jsonlite.dumps(obj)


def dirs(tmp_path: Path) -> list[str]:
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "journal").mkdir(exist_ok=True)
    return ["--state-dir", str(tmp_path / "state"), "--journal-root", str(tmp_path / "journal")]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("oci-systemd-hook: ")
    assert "error: " in lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--help", "-h"):
        code, out, err = run(capsys, [flag])
        assert (code, err) == (0, "")
        for knob, (_kind, text) in KNOBS.items():
            assert f"--{knob}" in out
            assert text in out
            assert "OCI_SYSTEMD_HOOK_" + knob.replace("-", "_").upper() in out
        for option in cli.SWITCHES + cli.VALUE_OPTIONS:
            assert option in out, option
        assert out.startswith("usage: oci-systemd-hook")


def test_help_wins_over_other_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["prestart", "--run-size=8m", "--help"])
    assert code == 0 and out.startswith("usage:")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, ["--version"]) == (0, f"oci-systemd-hook {__version__}\n", "")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--frobnicate"], ("unknown option '--frobnicate'", "--help")),
        (["-x"], ("unknown option '-x'",)),
        (["--"], ("unknown option '--'",)),
        (["--dry-run=yes"], ("option --dry-run takes no value",)),
        (["--state-dir"], ("option --state-dir needs a value",)),
        (["plan", "--bundle"], ("option --bundle needs a value",)),
        (["--state-dir", "relative"], ("--state-dir: expected an absolute path",)),
        (["--run-size=lots"], ("--run-size: expected a size",)),
        (["--journal=sometimes"], ("--journal: expected one of keep, remove, off",)),
        (["--debug=maybe"], ("--debug: expected true or false",)),
        (["prestop"], ("unknown stage 'prestop'",)),
        (["prestart", "poststop"], ("unexpected argument 'poststop'",)),
        (["plan", "extra"], ("plan takes no argument 'extra'",)),
        (["plan", "--bundle", "/x", "--pid", "12a"], ("--pid expects a process id, got '12a'",)),
    ],
)
def test_bad_command_lines(capsys: pytest.CaptureFixture[str], argv: list[str], fragments: tuple[str, ...]) -> None:
    code, out, err = run(capsys, argv)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, *fragments)


def test_env_knob_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCI_SYSTEMD_HOOK_JOURNAL", "nope")
    code, _, err = run(capsys, ["poststop"])
    assert code == 2
    assert_one_line_error(err, "OCI_SYSTEMD_HOOK_JOURNAL: expected one of")


def test_unknown_stage_from_env(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("stage", "whenever")
    code, _, err = run(capsys, [])
    assert code == 2
    assert_one_line_error(err, "unknown stage 'whenever'")


def test_empty_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, ["prestart"])
    assert code == 2
    assert_one_line_error(err, "no OCI state on stdin")


def test_bad_state(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    set_stdin(monkeypatch, state_json(tmp_path, pid="12"))
    code, _, err = run(capsys, ["prestart"])
    assert code == 2
    assert_one_line_error(err, '"pid" must be an integer')


@pytest.mark.parametrize("stage", ["prestart", "createRuntime", ""])
def test_non_systemd_container_is_left_alone(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path, stage: str) -> None:
    bundle = make_bundle(tmp_path / "b", ["/bin/sh", "-c", "sleep 1"])
    set_stdin(monkeypatch, state_json(bundle))
    argv = [stage] if stage else []
    assert run(capsys, [*argv, *dirs(tmp_path)]) == (0, "", "")
    assert os.listdir(tmp_path / "state") == []


def test_disabled_by_env_in_config(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", process={"args": ["/sbin/init"], "env": ["oci-systemd-hook=disabled"]})
    set_stdin(monkeypatch, state_json(bundle))
    assert run(capsys, ["prestart", *dirs(tmp_path)]) == (0, "", "")


def test_plan_bundle_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "mybundle")
    code, out, err = run(capsys, ["plan", "--bundle", str(bundle), *dirs(tmp_path)])
    assert (code, err) == (0, "")
    mid = machine_id_for("mybundle")
    lines = out.splitlines()
    assert lines[0] == "container mybundle"
    assert f"  machine-id {mid}" in lines
    assert f"  rootfs     {os.path.realpath(bundle / 'rootfs')}" in lines
    assert f"  state      {tmp_path}/state/mybundle" in lines
    for target in ("/run", "/run/lock", "/tmp", "/var/log/journal", "/run/host", "/etc/machine-id",
                   "/var/log/journal/" + mid):
        assert any(line.startswith("mount  ") and f" {target} <- " in line for line in lines), target
    assert "note   cgroups are decided from the live container's mount table (no pid given)" in lines
    assert os.listdir(tmp_path / "state") == []  # planning changes nothing
    assert os.listdir(tmp_path / "journal") == []


def test_plan_bundle_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCI_SYSTEMD_HOOK_RUN_SIZE", "16m")
    bundle = make_bundle(tmp_path / "b", annotations={"oci-systemd-hook.tmp-size": "300m",
                                                      "oci-systemd-hook.state-dir": "/etc"})
    code, out, err = run(capsys, ["plan", "--json", "--bundle", str(bundle), "--id", "web-1", "--run-size=32m",
                                  *dirs(tmp_path)])
    assert (code, err) == (0, "")
    d = jsonlite.loads(out)
    assert isinstance(d, dict)
    assert d["container_id"] == "web-1"
    assert d["machine_id"] == machine_id_for("web-1")
    assert d["state_dir"] == f"{tmp_path}/state/web-1"  # the annotation cannot move it
    assert d["journal_dir"] == f"{tmp_path}/journal/{d['machine_id']}"
    mounts = {m["target"]: m for m in d["mounts"]}  # type: ignore[union-attr]
    assert mounts["/run"]["data"] == ["mode=755", "size=32m"]  # flag beats env
    assert mounts["/tmp"]["data"] == ["mode=1777", "size=300m"]  # annotation
    assert mounts["/etc/machine-id"]["source"] == f"{tmp_path}/state/web-1/machine-id"


def test_plan_from_state_on_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    set_stdin(monkeypatch, state_json(bundle, pid=...))
    code, out, err = run(capsys, ["plan", *dirs(tmp_path)])
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"container {HEX64}"
    assert f"machine-id {HEX64[:32]}" in out


def test_plan_for_a_non_systemd_container(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", ["/bin/bash"])
    code, out, err = run(capsys, ["plan", "--bundle", str(bundle), *dirs(tmp_path)])
    assert (code, err) == (0, "")
    assert out.startswith("nothing to do")


def test_plan_missing_rootfs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    (bundle / "rootfs").rmdir()
    code, _, err = run(capsys, ["plan", "--bundle", str(bundle), *dirs(tmp_path)])
    assert code == 2
    assert_one_line_error(err, "is not a directory")


def test_plan_bad_bundle_name_as_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / ".hidden")
    code, _, err = run(capsys, ["plan", "--bundle", str(bundle), *dirs(tmp_path)])
    assert code == 2
    assert_one_line_error(err, '"id" must not start with "."')


def test_dry_run_prints_the_plan_without_a_pid(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    set_stdin(monkeypatch, state_json(bundle, pid=...))
    code, out, err = run(capsys, ["prestart", "--dry-run", "--json", *dirs(tmp_path)])
    assert (code, err) == (0, "")
    d = jsonlite.loads(out)
    assert isinstance(d, dict) and d["container_id"] == HEX64
    assert os.listdir(tmp_path / "state") == []


def test_prestart_without_pid_is_refused(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    set_stdin(monkeypatch, state_json(bundle, pid=...))
    code, out, err = run(capsys, ["prestart", *dirs(tmp_path)])
    assert (code, out) == (2, "")
    assert_one_line_error(err, HEX64[:12], '"pid"')


@pytest.mark.parametrize("stage", ["createContainer", "startContainer"])
def test_stages_after_pivot_root_are_refused(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path, stage: str) -> None:
    set_stdin(monkeypatch, state_json(make_bundle(tmp_path / "b")))
    code, out, err = run(capsys, [stage, *dirs(tmp_path)])
    assert (code, out) == (2, "")
    assert_one_line_error(err, f"{HEX64[:12]}: error: the {stage} stage runs after pivot_root")


def test_poststart_does_nothing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                tmp_path: Path) -> None:
    set_stdin(monkeypatch, state_json(make_bundle(tmp_path / "b"), status="running"))
    assert run(capsys, ["poststart", *dirs(tmp_path)]) == (0, "", "")


@pytest.mark.parametrize("argv", [["poststop"], []])
def test_poststop_with_nothing_left(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                    tmp_path: Path, argv: list[str]) -> None:
    set_stdin(monkeypatch, state_json(tmp_path / "gone", status="stopped", pid=...))
    assert run(capsys, [*argv, *dirs(tmp_path)]) == (0, "", "")
    assert os.listdir(tmp_path / "state") == []


def test_poststop_stage_from_env(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: Path) -> None:
    monkeypatch.setenv("stage", "poststop")
    set_stdin(monkeypatch, state_json(tmp_path / "gone"))  # with a pid: env stage wins over the guess
    assert run(capsys, dirs(tmp_path)) == (0, "", "")


def syslog_path(tmp_path: Path) -> str:
    path = str(tmp_path / "log")
    if len(path) < 100:
        return path
    return os.path.join(tempfile.mkdtemp(prefix="osh", dir="/tmp"), "log")  # sun_path is 108 bytes


def test_errors_go_to_syslog(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                             tmp_path: Path) -> None:
    path = syslog_path(tmp_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        listener.bind(path)
        listener.settimeout(2)
        monkeypatch.setenv("OCI_SYSTEMD_HOOK_SYSLOG_SOCKET", path)
        set_stdin(monkeypatch, state_json(make_bundle(tmp_path / "b")))
        code, _, err = run(capsys, ["createContainer", *dirs(tmp_path)])
        assert code == 2
        assert_one_line_error(err, HEX64[:12])
        line = listener.recv(65536).decode()
    finally:
        listener.close()
        os.unlink(path)
    assert line.startswith(f"<27>oci-systemd-hook[{os.getpid()}]: ")
    assert f"]: {HEX64[:12]}: the createContainer stage runs after pivot_root" in line
    assert HEX64[12:] not in line


@pytest.mark.parametrize("via", ["libc", "_socket"])
def test_syslog_through_libc_or_the_socket_module(tmp_path: Path, via: str) -> None:
    """Prestart has libc bound for its mounts and sends through it (no `_socket` import); other
    paths use `_socket`. Either way: the same datagram, and no listener or a path too long for
    AF_UNIX is never an error."""
    path = syslog_path(tmp_path)
    code = ("import sys\nsys.path.insert(0, sys.argv[1])\n"
            + ("from oci_systemd_hook import linux\n" if via == "libc" else "")
            + "from oci_systemd_hook.log import Log\n"
            "for where in sys.argv[2:]:\n    Log(syslog_socket=where).error('hello')\n"
            "print('_socket' in sys.modules)\n")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        listener.bind(path)
        listener.settimeout(5)
        res = subprocess.run([sys.executable, "-I", "-c", code, str(REPO), path, str(tmp_path / "nobody-listens"),
                              "/" + "x" * 200], capture_output=True, text=True, timeout=60, check=False)
        line = listener.recv(65536).decode()
    finally:
        listener.close()
        os.unlink(path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "oci-systemd-hook: error: hello\n" * 3
    assert res.stdout.strip() == str(via == "_socket")
    assert re.fullmatch(r"<27>oci-systemd-hook\[\d+\]: hello", line), line


def test_no_syslog_listener_is_not_an_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("OCI_SYSTEMD_HOOK_SYSLOG_SOCKET", str(tmp_path / "nobody-listens"))
    code, _, err = run(capsys, ["--frobnicate"])
    assert code == 2
    assert_one_line_error(err, "unknown option")


def test_unencodable_bundle_is_bad_input(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    set_stdin(monkeypatch, '{"id": "c1", "pid": 1, "bundle": "/tmp/\\ud800x"}')
    code, _, err = run(capsys, ["prestart", *dirs(tmp_path)])
    assert "internal error" not in err
    assert code == 2


# --- command-line edges ---------------------------------------------------------------------------

def _hook(*args: str, **kw: Any) -> Any:
    import subprocess

    return subprocess.run([sys.executable, "-I", "-m", "oci_systemd_hook", *args], capture_output=True, text=True,
                          timeout=60, env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""}, check=False, **kw)


@pytest.mark.parametrize("tool", ["plan", "check"])
def test_a_closed_pipe_is_no_internal_error(tmp_path: Path, tool: str) -> None:
    import subprocess

    bundle = make_bundle(tmp_path / "b")
    args = ["plan", "--json", "--bundle", str(bundle)]
    if tool == "check":
        args = ["check", "--json", str(bundle / "rootfs")]
    read, write = os.pipe()
    os.close(read)  # the reader (`head -1`) is gone before the first write
    try:
        res = subprocess.run([sys.executable, "-I", "-m", "oci_systemd_hook", *args], stdout=write,
                             stderr=subprocess.PIPE, text=True, timeout=60, env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""},
                             check=False)
    finally:
        os.close(write)
    assert res.stderr == "" and res.returncode == 141


def test_a_closed_stdin_is_bad_input() -> None:
    import subprocess

    res = subprocess.run([sys.executable, "-I", "-c", "import os, sys; os.close(0); sys.stdin = None;"
                          "from oci_systemd_hook.cli import main; sys.exit(main(['prestart']))"],
                         capture_output=True, text=True, timeout=60, env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""},
                         cwd=str(Path(__file__).resolve().parent.parent), check=False)
    assert res.returncode == 2
    assert res.stderr == ("oci-systemd-hook: error: no OCI state on stdin: stdin is closed (the runtime passes the "
                          "state there)\n")


def test_a_bare_run_on_a_terminal_prints_a_hint() -> None:
    import pty

    primary, secondary = pty.openpty()
    try:
        res = _hook(stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert res.returncode == 2
    assert res.stderr.startswith("oci-systemd-hook: error: expects the OCI state on stdin") and res.stderr.count(
        "\n") == 1


def test_usage_errors_of_the_tools_name_the_program_once() -> None:
    res = _hook("validate")
    assert res.returncode == 2
    assert res.stderr == "oci-systemd-hook: error: validate: the following arguments are required: FILE\n"
    assert res.stderr.count("oci-systemd-hook") == 1
    res = _hook("check")
    assert res.returncode == 2 and res.stderr.count("oci-systemd-hook") == 1


@pytest.mark.parametrize("args", [["--debug", "check", "/nonexistent"], ["check", "--debug", "/nonexistent"]])
def test_debug_on_either_side_of_a_tool(args: list[str]) -> None:
    res = _hook(*args)
    assert res.returncode == 2
    assert "cannot open the container root /nonexistent" in res.stderr
    assert "unknown" not in res.stderr and "unrecognized" not in res.stderr


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_short_version(flag: str) -> None:
    res = _hook(flag)
    assert (res.returncode, res.stdout) == (0, f"oci-systemd-hook {__version__}\n")


def test_tool_usage_errors_stay_out_of_syslog(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.setblocking(False)
        for args in (["check"], ["validate"], ["install", "--bogus"], ["check", "/nonexistent"]):
            res = subprocess.run([sys.executable, "-I", "-m", "oci_systemd_hook", *args], capture_output=True,
                                 text=True, timeout=60, env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": str(path)},
                                 check=False)
            assert res.returncode == 2, args
        with pytest.raises(BlockingIOError):
            server.recv(4096)


@pytest.mark.parametrize(("argv", "code", "out"), [(["--version"], 0, f"oci-systemd-hook {__version__}\n"),
                                                   (["--frobnicate"], 2, "")])
def test_the_launchers_entry_exits_at_once_with_everything_written(argv: list[str], code: int, out: str) -> None:
    """`run` leaves through os._exit, past Python's shutdown: the output must be complete
    (stdout is a pipe here, so block-buffered) and the status main's."""
    res = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                          "from oci_systemd_hook.cli import run; run()", str(REPO), *argv],
                         capture_output=True, text=True, timeout=60, env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""},
                         check=False)
    assert (res.returncode, res.stdout) == (code, out), res.stderr
    if code:
        assert_one_line_error(res.stderr, "unknown option")
