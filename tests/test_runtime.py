"""oci-systemd-runtime: the installed /bin/sh front and runtime.py, with a stand-in runc
that records how it was called (the real runc under Docker and containerd is in
test_docker.py and test_containerd.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from oci_systemd_hook import runtime
from oci_systemd_hook.installer import RUNTIME, runtime_text
from tests.fakecontainer import REPO

HOOK = "/usr/libexec/oci/hooks.d/oci-systemd-hook"


def fake_runc(directory: Path, status: int = 0, name: str = "runc") -> Path:
    """A runc that writes its argv (one per line) and cwd to <directory>/<name>.calls."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n"
                    f'{{ pwd; for a do echo "$a"; done; }} > "{directory}/{name}.calls"\n'
                    f"exit {status}\n")
    path.chmod(0o755)
    return path


def calls(runc: Path) -> list[str] | None:
    record = runc.parent / (runc.name + ".calls")
    return record.read_text().splitlines()[1:] if record.exists() else None


def wrapper(tmp_path: Path, runc: str = "") -> Path:
    path = tmp_path / "prefix" / RUNTIME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(runtime_text(sys.executable, str(REPO), HOOK, runc))
    path.chmod(0o755)
    return path


def bundle(tmp_path: Path, args: list[str], env: list[str] | None = None, mode: int = 0o600,
           **extra: object) -> Path:
    b = tmp_path / "bundle"
    b.mkdir(exist_ok=True)
    config: dict[str, object] = {
        "ociVersion": "1.0.2",
        "process": {"args": args, "env": env or ["PATH=/usr/bin:/bin"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        **extra,
    }
    path = b / "config.json"
    path.write_text(json.dumps(config, indent="\t") + "\n")
    path.chmod(mode)
    return b


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ["PATH"], **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, cwd=cwd, timeout=60)


# --- the command line, as runc reads it -------------------------------------------------


@pytest.mark.parametrize("argv, command, bundle_dir, log, log_format", [
    (["--root", "/run/docker/runtime-runc/moby", "--log", "/x/log.json", "--log-format", "json", "create",
      "--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s", "id"], "create", "/b", "/x/log.json", "json"),
    (["--root=/r", "--log=/l", "--log-format=json", "--systemd-cgroup", "create", "--bundle=/b2", "id"],
     "create", "/b2", "/l", "json"),
    (["--debug", "run", "-b", "/b3", "-d", "id"], "run", "/b3", "", "text"),
    (["-root", "/r", "--criu", "/usr/sbin/criu", "--rootless", "false", "create", "-b=/b4", "id"],
     "create", "/b4", "", "text"),
    (["create", "--pid-file", "/p", "id"], "create", "", "", "text"),
    (["--root", "/create", "state", "create"], "state", "", "", "text"),
    (["--", "run", "id"], "run", "", "", "text"),
])
def test_parse_runc_args(argv: list[str], command: str, bundle_dir: str, log: str, log_format: str) -> None:
    inv = runtime.parse_runc_args(argv)
    assert (inv.command, inv.bundle, inv.log, inv.log_format) == (command, bundle_dir, log, log_format)


# --- the config.json edit ------------------------------------------------------------------


def test_create_adds_the_hook_and_the_cgroup_mount_then_runs_runc_unchanged(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "bin", status=3)
    b = bundle(tmp_path, ["/sbin/init"], mode=0o640,
               hooks={"prestart": [{"path": "/usr/bin/libnetwork-setkey", "args": ["setkey", "x"]}]})
    argv = ["--root", "/r", "--log", str(tmp_path / "log.json"), "--log-format", "json",
            "create", "--bundle", str(b), "--pid-file", "/p", "c1"]
    proc = run([str(wrapper(tmp_path, str(runc))), *argv])
    assert proc.returncode == 3  # runc's status, unchanged
    assert calls(runc) == argv
    config = json.loads((b / "config.json").read_text())
    assert config["hooks"]["prestart"] == [
        {"path": "/usr/bin/libnetwork-setkey", "args": ["setkey", "x"]},  # Docker's stays first
        {"path": HOOK, "args": ["oci-systemd-hook", "prestart"]}]
    assert config["hooks"]["poststop"] == [{"path": HOOK, "args": ["oci-systemd-hook", "poststop"]}]
    assert config["mounts"][-1] == {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                                    "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
    assert stat.S_IMODE((b / "config.json").stat().st_mode) == 0o640
    assert [p.name for p in b.iterdir()] == ["config.json"]  # no temporary file left


def test_create_keeps_the_owner_and_is_idempotent(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "bin")
    b = bundle(tmp_path, ["/usr/lib/systemd/systemd"],
               mounts=[{"destination": "/sys/fs/cgroup/", "type": "bind", "source": "/sys/fs/cgroup"}])
    if os.geteuid() == 0:
        os.chown(b / "config.json", 1234, 5678)
    w = wrapper(tmp_path, str(runc))
    assert run([str(w), "create", "-b", str(b), "c1"]).returncode == 0
    first = (b / "config.json").read_bytes()
    config = json.loads(first)
    assert len(config["mounts"]) == 1  # it had a /sys/fs/cgroup mount (written with a trailing slash)
    if os.geteuid() == 0:
        assert ((b / "config.json").stat().st_uid, (b / "config.json").stat().st_gid) == (1234, 5678)
    inode = (b / "config.json").stat().st_ino
    assert run([str(w), "run", "--bundle", str(b), "c1"]).returncode == 0
    assert (b / "config.json").read_bytes() == first
    assert (b / "config.json").stat().st_ino == inode  # not rewritten


@pytest.mark.parametrize("args, env, annotations", [
    (["/bin/sh", "-c", "sleep 1"], [], {}),
    (["/sbin/init"], ["oci-systemd-hook=disabled"], {}),
    (["/sbin/init"], ["OCI-SYSTEMD-HOOK=Disabled"], {"oci-systemd-hook.enable": "true"}),
    (["/sbin/init"], [], {"oci-systemd-hook.enable": "false"}),
    (["/dev/init", "--", "/sbin/init"], [], {}),
])
def test_other_containers_config_is_left_byte_for_byte(tmp_path: Path, args: list[str], env: list[str],
                                                       annotations: dict[str, str]) -> None:
    runc = fake_runc(tmp_path / "bin")
    b = bundle(tmp_path, args, env=env or None, annotations=annotations)
    before = (b / "config.json").read_bytes()
    inode = (b / "config.json").stat().st_ino
    assert run([str(wrapper(tmp_path, str(runc))), "create", "--bundle", str(b), "c1"]).returncode == 0
    assert (b / "config.json").read_bytes() == before
    assert (b / "config.json").stat().st_ino == inode
    assert calls(runc) == ["create", "--bundle", str(b), "c1"]


def test_annotation_forces_the_hook_on_for_a_wrapper_script(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "bin")
    b = bundle(tmp_path, ["/bin/sh", "-c", "exec /sbin/init"], annotations={"oci-systemd-hook.enable": "yes"})
    assert run([str(wrapper(tmp_path, str(runc))), "create", "c1"], cwd=b).returncode == 0  # bundle = cwd
    assert json.loads((b / "config.json").read_text())["hooks"]["prestart"][0]["path"] == HOOK


def test_hook_settings_come_from_the_wrappers_environment(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "bin")
    b = bundle(tmp_path, ["/sbin/init"], env=["OCI_SYSTEMD_HOOK_STATE_DIR=/from/the/container"])
    env = {"OCI_SYSTEMD_HOOK_STATE_DIR": "/srv/state", "OCI_SYSTEMD_HOOK_DEBUG": "1", "OTHER": "x"}
    assert run([str(wrapper(tmp_path, str(runc))), "create", "-b", str(b), "c1"], env=env).returncode == 0
    hooks = json.loads((b / "config.json").read_text())["hooks"]
    for stage in ("prestart", "poststop"):
        assert hooks[stage][0]["env"] == ["OCI_SYSTEMD_HOOK_DEBUG=1", "OCI_SYSTEMD_HOOK_STATE_DIR=/srv/state"]


def test_bad_annotation_is_one_runc_style_line_and_runc_is_not_run(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "bin")
    b = bundle(tmp_path, ["/sbin/init"], annotations={"oci-systemd-hook.enable": "maybe"})
    log = tmp_path / "log.json"
    proc = run([str(wrapper(tmp_path, str(runc))), "--log", str(log), "--log-format", "json", "create", "-b", str(b),
                "c1"])
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "oci-systemd-runtime: annotation oci-systemd-hook.enable: expected true or false, got 'maybe'"]
    record = json.loads(log.read_text())
    assert record["level"] == "error" and record["msg"] == proc.stderr.strip()
    assert calls(runc) is None
    # without --log: runc's own text format on stderr
    proc = run([str(wrapper(tmp_path, str(runc))), "create", "-b", str(b), "c1"])
    assert proc.returncode == 1
    line, = proc.stderr.splitlines()
    assert line.startswith('time="') and ' level=error msg="oci-systemd-runtime: annotation ' in line


def test_unparsable_config_goes_to_runc_as_it_is(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "bin", status=1)
    b = tmp_path / "bundle"
    b.mkdir()
    (b / "config.json").write_text('{"process": ')
    assert run([str(wrapper(tmp_path, str(runc))), "create", "-b", str(b), "c1"]).returncode == 1
    assert calls(runc) == ["create", "-b", str(b), "c1"]  # runc says what is wrong, in its words
    assert (b / "config.json").read_text() == '{"process": '


@pytest.mark.root
def test_unwritable_bundle_is_one_line_and_nothing_runs(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (a read-only bind mount)")
    runc = fake_runc(tmp_path / "bin")
    b = bundle(tmp_path, ["/sbin/init"])
    w = wrapper(tmp_path, str(runc))
    proc = run(["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{b}" "{b}" && exec "{w}" create -b "{b}" c1'])
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].endswith(
        f'msg="oci-systemd-runtime: cannot add the hook to {b}/config.json: Read-only file system"')
    assert calls(runc) is None


# --- pass-through and finding runc ---------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--root", "/r", "start", "c1"], ["--root", "/r", "--log", "/l", "--log-format", "json", "state", "c1"],
    ["kill", "c1", "SIGRTMIN+3"], ["delete", "--force", "c1"], ["exec", "--process", "/p", "c1"],
    ["pause", "c1"], ["resume", "c1"], ["--version"], [], ["features"],
    ["--root", "create", "state", "c1"],  # "create" is --root's value here
])
def test_other_subcommands_go_straight_to_runc_without_python(tmp_path: Path, argv: list[str]) -> None:
    runc = fake_runc(tmp_path / "bin", status=7)
    trace = tmp_path / "trace"
    proc = run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), str(wrapper(tmp_path, str(runc))),
                *argv])
    assert proc.returncode == 7
    assert calls(runc) == argv
    executed = [line for line in trace.read_text().splitlines() if "execve(" in line and "= 0" in line]
    assert not any("python" in line for line in executed), executed


def test_runc_is_the_pin_then_the_env_then_path_but_never_the_wrapper(tmp_path: Path) -> None:
    pinned = fake_runc(tmp_path / "pinned")
    from_env = fake_runc(tmp_path / "env")
    on_path = fake_runc(tmp_path / "path")
    # the wrapper installed as `runc`, first on PATH: it must skip itself
    self_dir = tmp_path / "self"
    self_dir.mkdir()
    (self_dir / "runc").write_text(runtime_text(sys.executable, str(REPO), HOOK, ""))
    (self_dir / "runc").chmod(0o755)
    path = f"{self_dir}:{on_path.parent}:/usr/bin:/bin"
    assert run([str(wrapper(tmp_path, str(pinned))), "state", "a"], env={"OCI_SYSTEMD_RUNTIME_RUNC": str(from_env),
                                                                         "PATH": path}).returncode == 0
    assert calls(pinned) == ["state", "a"] and calls(from_env) is None
    assert run(["runc", "state", "b"], env={"OCI_SYSTEMD_RUNTIME_RUNC": str(from_env), "PATH": path}).returncode == 0
    assert calls(from_env) == ["state", "b"] and calls(on_path) is None
    assert run(["runc", "state", "c"], env={"PATH": path}).returncode == 0
    assert calls(on_path) == ["state", "c"]


def test_no_runc_anywhere_is_one_line(tmp_path: Path) -> None:
    w = wrapper(tmp_path)
    proc = run([str(w), "state", "a"], env={"PATH": str(tmp_path / "empty")})
    assert proc.returncode == 1
    line, = proc.stderr.splitlines()
    assert line.endswith('level=error msg="oci-systemd-runtime: no runc found on PATH (install --runc PATH, or set '
                         'OCI_SYSTEMD_RUNTIME_RUNC)"')
    proc = run([str(w), "state", "a"], env={"OCI_SYSTEMD_RUNTIME_RUNC": str(w)})
    assert proc.returncode == 1 and "names this wrapper" in proc.stderr


def test_a_gone_runc_is_reported_by_the_create_path(tmp_path: Path) -> None:
    b = bundle(tmp_path, ["/bin/true"])
    proc = run([str(wrapper(tmp_path, str(tmp_path / "gone"))), "create", "-b", str(b), "c1"])
    assert proc.returncode == 127
    assert "oci-systemd-runtime: cannot run " in proc.stderr


# --- install --runc / --docker ----------------------------------------------------------------


def _tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "oci_systemd_hook", *argv], env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""},
               cwd=REPO)


def test_install_pins_runc_and_refuses_the_wrapper_or_a_non_executable(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "bin")
    prefix = tmp_path / "p"
    assert _tool("install", "--prefix", str(prefix), "--runc", str(runc)).returncode == 0
    assert f"runc='{runc}'\n" in (prefix / RUNTIME).read_text()
    proc = _tool("install", "--prefix", str(prefix), "--runc", str(prefix / RUNTIME))
    assert proc.returncode == 2 and "that is the wrapper itself" in proc.stderr
    proc = _tool("install", "--prefix", str(prefix), "--runc", str(tmp_path / "bin" / "runc.calls"))
    assert proc.returncode == 2 and "not an executable file" in proc.stderr
    proc = _tool("install", "--prefix", str(prefix), "--runc", "runc")
    assert proc.returncode == 2 and "--runc must be an absolute path" in proc.stderr


def test_install_docker_merges_one_entry_and_uninstall_removes_exactly_it(tmp_path: Path) -> None:
    prefix = tmp_path / "p"
    daemon = tmp_path / "daemon.json"
    original = {"log-driver": "journald", "runtimes": {"crun": {"path": "/usr/bin/crun"}}, "debug": True}
    daemon.write_text(json.dumps(original))
    daemon.chmod(0o600)
    proc = _tool("install", "--prefix", str(prefix), "--docker", "--docker-config", str(daemon))
    assert proc.returncode == 0, proc.stderr
    assert "systemctl reload docker" in proc.stdout and "kill -HUP" in proc.stdout
    merged = json.loads(daemon.read_text())
    assert merged == {**original, "runtimes": {"crun": {"path": "/usr/bin/crun"},
                                               "oci-systemd": {"path": str(prefix / RUNTIME)}}}
    assert stat.S_IMODE(daemon.stat().st_mode) == 0o600
    again = _tool("install", "--prefix", str(prefix), "--docker-config", str(daemon))  # implies --docker
    assert again.returncode == 0 and f"unchanged {daemon}" in again.stdout
    proc = _tool("uninstall", "--prefix", str(prefix), "--docker", "--docker-config", str(daemon))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(daemon.read_text()) == original
    assert not (prefix / RUNTIME).exists()


def test_install_docker_creates_a_missing_file_and_uninstall_drops_the_empty_runtimes(tmp_path: Path) -> None:
    prefix = tmp_path / "p"
    daemon = tmp_path / "etc-docker" / "daemon.json"
    assert _tool("install", "--prefix", str(prefix), "--docker-config", str(daemon)).returncode == 0
    assert json.loads(daemon.read_text()) == {"runtimes": {"oci-systemd": {"path": str(prefix / RUNTIME)}}}
    assert stat.S_IMODE(daemon.stat().st_mode) == 0o644
    assert _tool("uninstall", "--prefix", str(prefix), "--docker-config", str(daemon)).returncode == 0
    assert json.loads(daemon.read_text()) == {}


@pytest.mark.parametrize("text", ['{"runtimes": [', '["a"]', '{"runtimes": "runc"}', '// comment\n{}'])
def test_install_docker_leaves_a_bad_daemon_json_alone(tmp_path: Path, text: str) -> None:
    daemon = tmp_path / "daemon.json"
    daemon.write_text(text)
    proc = _tool("install", "--prefix", str(tmp_path / "p"), "--docker-config", str(daemon))
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "left it as it was" in proc.stderr
    assert daemon.read_text() == text


def test_uninstall_docker_keeps_an_entry_it_did_not_write(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon.json"
    mine = {"runtimes": {"oci-systemd": {"path": "/opt/other/oci-systemd-runtime", "runtimeArgs": ["--debug"]}}}
    daemon.write_text(json.dumps(mine))
    proc = _tool("uninstall", "--prefix", str(tmp_path / "p"), "--docker-config", str(daemon))
    assert proc.returncode == 0 and "kept the runtime oci-systemd" in proc.stdout
    assert json.loads(daemon.read_text()) == mine


def test_create_asks_systemd_for_its_readiness_unless_it_has_a_socket(tmp_path: Path) -> None:
    from oci_systemd_hook.plan import NOTIFY_PATH

    assert runtime.NOTIFY_PATH == NOTIFY_PATH
    runc = fake_runc(tmp_path / "bin")
    b = bundle(tmp_path, ["/sbin/init"])
    assert run([str(wrapper(tmp_path, str(runc))), "create", "-b", str(b), "c1"]).returncode == 0
    assert json.loads((b / "config.json").read_text())["process"]["env"] == ["PATH=/usr/bin:/bin",
                                                                              "NOTIFY_SOCKET=/run/host/notify"]
    (tmp_path / "2").mkdir()
    b2 = bundle(tmp_path / "2", ["/sbin/init"], env=["NOTIFY_SOCKET=/run/mine"])
    assert run([str(wrapper(tmp_path, str(runc))), "create", "-b", str(b2), "c2"]).returncode == 0
    assert json.loads((b2 / "config.json").read_text())["process"]["env"] == ["NOTIFY_SOCKET=/run/mine"]
