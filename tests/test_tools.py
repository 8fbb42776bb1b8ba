"""install, uninstall and validate: the files a container engine needs, and the hooks.d schema."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from oci_systemd_hook import __version__, cli, hooksfile, installer
from oci_systemd_hook.errors import InputError

REPO = Path(__file__).resolve().parent.parent
HOOKS_FILE = REPO / "hooks.d" / "oci-systemd-hook.json"
LAUNCHER = "usr/libexec/oci/hooks.d/oci-systemd-hook"
JSON_FILE = "usr/share/containers/oci/hooks.d/oci-systemd-hook.json"
ANNOTATION_FILE = "usr/share/containers/oci/hooks.d/oci-systemd-hook-annotation.json"
MAN_FILE = "usr/share/man/man1/oci-systemd-hook.1"
RUNTIME_FILE = "usr/bin/oci-systemd-runtime"
MANIFEST = "usr/share/oci-systemd-hook/installed-files"


@pytest.fixture(autouse=True)
def no_syslog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCI_SYSTEMD_HOOK_SYSLOG_SOCKET", "")


def run_tool(*argv: str) -> int:
    return cli.main(list(argv))


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if stat.S_ISREG(st.st_mode) else b"")
    return out


@pytest.fixture
def installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    dest = tmp_path / "dest"
    assert run_tool("install", "--destdir", str(dest)) == 0
    capsys.readouterr()
    return dest


# --- install -----------------------------------------------------------------------------


def test_install_writes_launcher_json_man_page_and_manifest(installed: Path) -> None:
    launcher = installed / LAUNCHER
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    text = launcher.read_text()
    first = text.splitlines()[0]
    assert first == "#!/bin/sh"
    assert f"python='{sys.executable}'\n" in text and f"package_dir='{REPO}'\n" in text
    assert '"$python" -IS -c' in text
    assert repr(str(REPO)) in text  # the directory that holds the package
    assert "from oci_systemd_hook.cli import run; run()" in text
    for rel in (JSON_FILE, ANNOTATION_FILE, MAN_FILE, MANIFEST):
        assert stat.S_IMODE((installed / rel).stat().st_mode) == 0o644, rel
    assert (installed / MAN_FILE).read_bytes() == (REPO / "man" / "oci-systemd-hook.1").read_bytes()
    listed = [line.split(" ", 1) for line in (installed / MANIFEST).read_text().splitlines() if line[:1] != "#"]
    files = sorted(p for kind, p in listed if kind == "file")
    assert files == sorted("/" + rel for rel in (LAUNCHER, JSON_FILE, ANNOTATION_FILE, MAN_FILE, RUNTIME_FILE))
    runtime = installed / RUNTIME_FILE
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o755
    assert f"hook='/{LAUNCHER}'\n" in runtime.read_text() and "runc=''\n" in runtime.read_text()


def test_installed_json_validates_and_points_at_the_launcher(installed: Path) -> None:
    hooksfile.validate(str(installed / JSON_FILE), str(installed))
    config = json.loads((installed / JSON_FILE).read_text())
    assert config["hook"]["path"] == "/" + LAUNCHER  # the final path, without destdir
    assert config["hook"]["args"] == ["oci-systemd-hook"]
    assert config["stages"] == ["prestart", "poststop"]
    # With the default prefix, install writes exactly the file the repository ships.
    assert (installed / JSON_FILE).read_bytes() == HOOKS_FILE.read_bytes()
    assert (installed / ANNOTATION_FILE).read_bytes() == (HOOKS_FILE.parent / Path(ANNOTATION_FILE).name).read_bytes()


def test_the_annotation_file_matches_only_the_force_on_annotation(installed: Path) -> None:
    """podman ANDs one file's conditions: forcing the hook on for a wrapper-script PID 1 takes a
    second file whose only condition is the annotation."""
    import re

    hooksfile.validate(str(installed / ANNOTATION_FILE), str(installed))
    config = json.loads((installed / ANNOTATION_FILE).read_text())
    assert set(config["when"]) == {"annotations"}
    ((key, value),) = config["when"]["annotations"].items()
    assert re.search(key, "oci-systemd-hook.enable") and not re.search(key, "oci-systemd-hookXenable")
    for yes in ("true", "True", "1", "yes", "on", "enabled"):
        assert re.search(value, yes), yes
    for no in ("false", "0", "off", "no", "truthy"):
        assert not re.search(value, no), no


def test_commands_regex_matches_init_and_systemd_only() -> None:
    import re

    regex = re.compile(installer.COMMANDS_REGEX)
    for command in ("init", "systemd", "/sbin/init", "/usr/lib/systemd/systemd", "./init"):
        assert regex.search(command), command
    for command in ("/bin/sh", "initd", "/usr/bin/systemd-run", "/sbin/init.sh", "myinit"):
        assert not regex.search(command), command


def test_launcher_runs_with_an_empty_environment(installed: Path, tmp_path: Path) -> None:
    launcher = str(installed / LAUNCHER)
    res = subprocess.run([launcher, "--version"], env={}, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"oci-systemd-hook {__version__}"
    # A container whose command is not init: prestart has nothing to do and exits 0, quietly.
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "process": {"args": ["/bin/sh"], "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": "rootfs"}, "mounts": []}))
    state = json.dumps({"ociVersion": "1.0.2", "id": "skipme", "status": "creating", "pid": os.getpid(),
                        "bundle": str(bundle)})
    res = subprocess.run([launcher, "prestart"], input=state, env={},
                         capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    res = subprocess.run([launcher], input=state, env={}, capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stderr) == (0, "")


def test_reinstall_is_identical(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(installed)
    inode = (installed / LAUNCHER).stat().st_ino
    assert run_tool("install", "--destdir", str(installed)) == 0
    assert "unchanged" in capsys.readouterr().out
    assert snapshot(installed) == before
    assert (installed / LAUNCHER).stat().st_ino == inode


def test_reinstall_replaces_a_changed_file_atomically(installed: Path) -> None:
    launcher = installed / LAUNCHER
    expected = launcher.read_bytes()
    launcher.write_text("#!/bin/sh\nexit 1\n")
    launcher.chmod(0o600)
    assert run_tool("install", "--destdir", str(installed)) == 0
    assert launcher.read_bytes() == expected
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    leftovers = [p for p in launcher.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_uninstall_removes_exactly_what_install_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dest"
    # Pre-existing, unrelated: a directory install also uses, with a file of someone else's in it.
    other = dest / "usr/share/containers/oci/hooks.d/other-hook.json"
    other.parent.mkdir(parents=True)
    other.write_text("{}\n")
    before = snapshot(dest)
    assert run_tool("install", "--destdir", str(dest)) == 0
    assert run_tool("install", "--destdir", str(dest)) == 0
    assert run_tool("uninstall", "--destdir", str(dest)) == 0
    out = capsys.readouterr().out
    assert f"removed {dest / LAUNCHER}" in out
    assert snapshot(dest) == before
    # Uninstalling again finds nothing to do.
    assert run_tool("uninstall", "--destdir", str(dest)) == 0
    assert "nothing to uninstall" in capsys.readouterr().out


def test_uninstall_refuses_a_manifest_pointing_outside_the_prefix(installed: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    with (installed / MANIFEST).open("a") as f:
        f.write(f"file {victim}\n")
    assert run_tool("uninstall", "--destdir", str(installed), "--prefix", "/usr") == 2
    assert victim.read_text() == "keep me"


def test_install_with_another_prefix_and_python(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "d"
    assert run_tool("install", "--destdir", str(dest), "--prefix", "/usr/local", "--python", sys.executable) == 0
    assert "--hooks-dir" in capsys.readouterr().out  # /usr/local/share is not where podman looks
    config = json.loads((dest / "usr/local/share/containers/oci/hooks.d/oci-systemd-hook.json").read_text())
    assert config["hook"]["path"] == "/usr/local/libexec/oci/hooks.d/oci-systemd-hook"
    assert run_tool("uninstall", "--destdir", str(dest), "--prefix", "/usr/local") == 0
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("args", [["--prefix", "usr"], ["--python", "python3"], ["--python", "/nonexistent/py"],
                                  ["--bogus"]])
def test_install_bad_arguments_exit_2(tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tool("install", "--destdir", str(tmp_path / "d"), *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err
    assert not (tmp_path / "d" / "usr").exists()


def test_tool_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    for tool in ("install", "uninstall", "validate", "check"):
        assert run_tool(tool, "--help") == 0
        assert tool in capsys.readouterr().out


# --- validate ----------------------------------------------------------------------------


def test_shipped_hooks_file_is_valid(capsys: pytest.CaptureFixture[str], installed: Path) -> None:
    assert run_tool("validate", str(HOOKS_FILE), "--root", str(installed)) == 0
    assert capsys.readouterr().out.strip() == f"{HOOKS_FILE}: valid oci-hooks 1.0.0"


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = hooksfile.schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)


GOOD = {"version": "1.0.0", "hook": {"path": "/bin/true"}, "when": {"always": True}, "stages": ["prestart"]}


def with_change(path: str, value: object) -> dict[str, object]:
    doc = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


BROKEN = [
    (with_change("hook.path", "x"), "hook.path", "not an absolute path"),
    (with_change("hook.path", 5), "hook.path", "must be a string"),
    (with_change("hook", ...), "hook", "required"),
    (with_change("hook.path", ...), "hook.path", "required"),
    (with_change("when", ...), "when", "required"),
    (with_change("stages", ...), "stages", "required"),
    (with_change("version", ...), "version", "required"),
    (with_change("version", "2.0.0"), "version", '"1.0.0"'),
    (with_change("when", {}), "when", "at least one condition"),
    (with_change("when", {"commands": []}), "when", "at least one condition"),
    (with_change("when", {"always": "yes"}), "when.always", "boolean"),
    (with_change("when", {"commands": ["("]}), "when.commands[0]", "regular expression"),
    (with_change("when", {"commands": ["(?<!x)init"]}), "when.commands[0]", "Go regexp"),
    (with_change("when", {"annotations": {"a": "["}}), 'when.annotations["a"]', "regular expression"),
    (with_change("when", {"annotations": {"a": 1}}), "when.annotations.a", "string"),
    (with_change("stages", []), "stages", "non-empty"),
    (with_change("stages", ["prestart", "bogus"]), "stages[1]", "not an OCI hook stage"),
    (with_change("stages", "prestart"), "stages", "array"),
    (with_change("hook.timeout", 0), "hook.timeout", "at least 1"),
    (with_change("hook.args", ["a", 1]), "hook.args[1]", "string"),
    (with_change("hook.env", ["NOEQUALS"]), "hook.env[0]", "NAME=VALUE"),
    (with_change("hook.extra", 1), "hook", "extra"),
    (with_change("extra", 1), "(top level)", "extra"),
]


@pytest.mark.parametrize(("doc", "field", "words"), BROKEN, ids=[f"{b[1]}-{b[2]}" for b in BROKEN])
def test_broken_files_exit_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              doc: dict[str, object], field: str, words: str) -> None:
    pytest.importorskip("jsonschema")
    path = tmp_path / "hook.json"
    path.write_text(json.dumps(doc))
    assert run_tool("validate", str(path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{path}: {field}: " in err, err
    assert words in err, err


@pytest.mark.parametrize(("content", "words"), [("{", "not valid JSON"), ("[]", "(top level)"),
                                                 ("\udcff", "UTF-8"), (None, "No such file")])
def test_unreadable_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None,
                                 words: str) -> None:
    path = tmp_path / "hook.json"
    if content is not None:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    assert run_tool("validate", str(path)) == 2
    assert words in capsys.readouterr().err


def test_valid_variants(tmp_path: Path) -> None:
    pytest.importorskip("jsonschema")
    for when in ({"hasBindMounts": True}, {"annotations": {"^io\\.x$": "true"}}, {"always": False, "commands": ["x"]}):
        doc = dict(GOOD, when=when, stages=["createRuntime", "poststop"])
        doc["hook"] = {"path": "/bin/true", "args": ["h", "x"], "env": ["A=1", "B="], "timeout": 5}
        path = tmp_path / "ok.json"
        path.write_text(json.dumps(doc))
        hooksfile.validate(str(path))


@pytest.mark.parametrize(("hook_path", "words"), [("/nonexistent/hook", "does not exist"),
                                                  ("PLAIN", "is not executable"),
                                                  ("/etc", "does not exist")])
def test_a_hook_path_podman_would_drop_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   hook_path: str, words: str) -> None:
    pytest.importorskip("jsonschema")
    if hook_path == "PLAIN":
        plain = tmp_path / "plain"
        plain.write_text("not a program\n")
        plain.chmod(0o644)
        hook_path = str(plain)
    path = tmp_path / "hook.json"
    path.write_text(json.dumps(dict(GOOD, hook={"path": hook_path})))
    assert run_tool("validate", str(path)) == 2
    err = capsys.readouterr().err
    assert f"hook.path: {hook_path} {words}" in err and err.count("\n") == 1, err


def test_a_staged_hook_path_is_checked_below_root(tmp_path: Path) -> None:
    pytest.importorskip("jsonschema")
    staged = tmp_path / "stage" / "usr" / "libexec" / "h"
    staged.parent.mkdir(parents=True)
    staged.write_text("#!/bin/sh\n")
    staged.chmod(0o755)
    path = tmp_path / "hook.json"
    path.write_text(json.dumps(dict(GOOD, hook={"path": "/usr/libexec/h"})))
    hooksfile.validate(str(path), str(tmp_path / "stage"))
    with pytest.raises(InputError, match="does not exist"):
        hooksfile.validate(str(path))


def test_the_legacy_format_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"hook": "/usr/libexec/oci/hooks.d/oci-systemd-hook", "stage": ["prestart"],
                                "cmds": [".*/init$"]}))
    assert run_tool("validate", str(path)) == 2
    assert "the legacy 0.1.0 hooks format" in capsys.readouterr().err


# --- the launcher's pins ------------------------------------------------------------------------


def test_install_pins_final_paths_when_staging(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dest"
    import shutil

    shutil.copytree(REPO / "oci_systemd_hook", dest / "usr/lib/python3/dist-packages/oci_systemd_hook")
    assert run_tool("install", "--destdir", str(dest), "--python", "/usr/bin/python3",
                    "--package-dir", "/usr/lib/python3/dist-packages") == 0
    out = capsys.readouterr().out
    assert "the launcher runs /usr/bin/python3 with the package in /usr/lib/python3/dist-packages" in out
    text = (dest / LAUNCHER).read_text()
    assert "python='/usr/bin/python3'" in text and "package_dir='/usr/lib/python3/dist-packages'" in text
    assert str(dest) not in text, "the staging directory leaked into the launcher"


@pytest.mark.parametrize("bad", ["relative/python", "/with space/python", "/quote'/python", "/dollar$x"])
def test_install_refuses_paths_the_launcher_cannot_hold(tmp_path: Path, bad: str) -> None:
    assert run_tool("install", "--destdir", str(tmp_path / "d"), "--python", bad) == 2
    assert run_tool("install", "--destdir", str(tmp_path / "d"), "--package-dir", bad) == 2


def _launch(launcher: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(launcher), "--version"], capture_output=True, text=True, timeout=60, check=False)


def test_launcher_runs_and_says_which_pin_is_gone(tmp_path: Path) -> None:
    venv_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv_dir)], check=True)
    pkg = tmp_path / "site"
    pkg.mkdir()
    import shutil

    shutil.copytree(REPO / "oci_systemd_hook", pkg / "oci_systemd_hook")
    launcher = tmp_path / "oci-systemd-hook"
    launcher.write_text(installer.launcher_text(str(venv_dir / "bin" / "python"), str(pkg)))
    launcher.chmod(0o755)
    res = _launch(launcher)
    assert (res.returncode, res.stdout) == (0, f"oci-systemd-hook {__version__}\n"), res.stderr
    shutil.rmtree(pkg)
    res = _launch(launcher)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert f"runs the package in {pkg}, which is gone" in res.stderr
    shutil.rmtree(venv_dir)  # a removed virtual environment
    res = _launch(launcher)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res
    assert f"runs {venv_dir}/bin/python, which is gone" in res.stderr
