"""The hook uses CPython's private modules for speed (_json, _socket, _sha256/_sha2); on an
interpreter without them each has a fallback that gives the same results. Each test blocks the
private modules in a fresh interpreter (sys.modules[name] = None makes the import fail)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from oci_systemd_hook import jsonlite
from oci_systemd_hook.ids import hashed_machine_id
from tests.fakecontainer import REPO

PRIVATE = ("_json", "_socket", "_sha256", "_sha2")


def run_blocked(code: str, blocked: tuple[str, ...] = PRIVATE) -> str:
    prelude = f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
    res = subprocess.run([sys.executable, "-I", "-c", prelude + code], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


DOCS = [b'{"ociVersion": "1.0.2", "id": "x", "pid": 42, "annotations": {"a": "\\u00e9"}}',
        b' [1, -2.5e3, "tab\\t", null, true, false, {"k": []}] ', b'"\\ud800"']
BAD = [b'{"a": NaN}', b'{"a": 1', b"", b"[1] 2", b'{"a":1,}', b"\xff", b"[" * 100000]


def test_json_without_the_accelerator() -> None:
    out = run_blocked(
        "from oci_systemd_hook import jsonlite\n"
        "import json\n"
        f"docs = {DOCS!r}\n"
        f"bad = {BAD!r}\n"
        "res = [jsonlite.loads(d) for d in docs]\n"
        "errs = []\n"
        "for b in bad:\n"
        "    try:\n"
        "        jsonlite.loads(b)\n"
        "        errs.append('accepted')\n"
        "    except ValueError:\n"
        "        errs.append('ValueError')\n"
        "dump = jsonlite.dumps({'a': ['é', 1.5, None]}, indent=1)\n"
        "print(json.dumps({'values': res, 'errors': errs, 'dump': dump}))\n")
    got = json.loads(out)
    assert got["values"] == [jsonlite.loads(d) for d in DOCS]
    assert got["errors"] == ["ValueError"] * len(BAD)
    assert got["dump"] == jsonlite.dumps({"a": ["é", 1.5, None]}, indent=1)


def test_machine_id_hash_without_the_private_sha_modules() -> None:
    out = run_blocked("from oci_systemd_hook.ids import machine_id_for\nprint(machine_id_for('web1'))\n")
    digest = hashlib.sha256(b"web1").hexdigest()[:32]
    expected = digest[:12] + "4" + digest[13:16] + "89ab"[int(digest[16], 16) & 3] + digest[17:]
    assert out.strip() == expected == hashed_machine_id("web1")


def test_syslog_with_and_without_sockets(tmp_path: Path) -> None:
    """With `_socket` blocked, the public `socket` (a fake here: the real one needs `_socket`) is
    used; with neither, syslog is off and the message still reaches stderr."""
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(10)
        shim = tmp_path / "shim"
        shim.mkdir()
        # A `socket` module standing in for another interpreter's: built on the real one, loaded
        # before _socket is blocked.
        (shim / "socket_shim.py").write_text("from socket import *  # noqa\n")
        code = (f"sys.path.insert(0, {str(shim)!r})\nimport socket_shim\nsys.modules['socket'] = socket_shim\n"
                "sys.modules['_socket'] = None\n"
                f"from oci_systemd_hook.log import Log\nLog(syslog_socket={str(path)!r}).error('hello')\n")
        run_blocked(code, ("_json", "_sha256", "_sha2"))  # _socket itself is blocked after the shim loads
        line = server.recv(4096).decode()
        assert line.startswith("<27>oci-systemd-hook[") and line.endswith("]: hello"), line
    res = subprocess.run([sys.executable, "-I", "-c", f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
                          "sys.modules['_socket'] = None\nsys.modules['socket'] = None\n"
                          "from oci_systemd_hook.log import Log\n"
                          f"Log(syslog_socket={str(path)!r}).error('hello')\n"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert (res.returncode, res.stderr) == (0, "oci-systemd-hook: error: hello\n")


@pytest.mark.parametrize("blocked", [PRIVATE, ("_json",), ("_socket",), ("_sha256", "_sha2")])
def test_plan_of_a_bundle_without_private_modules(tmp_path: Path, blocked: tuple[str, ...]) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["/sbin/init"]}, "root": {"path": "rootfs"}}))
    code = ("from oci_systemd_hook.cli import main\n"
            f"sys.exit(main(['plan', '--json', '--bundle', {str(bundle)!r}, '--id', 'web1', "
            f"'--state-dir', {str(tmp_path / 'state')!r}]))\n")
    out = run_blocked(code, blocked)
    assert json.loads(out)["machine_id"] == hashed_machine_id("web1")


def test_syscalls_through_public_ctypes_when_the_private_path_is_missing(tmp_path: Path) -> None:
    """linux.py calls through `_ctypes` directly; where that lacks what it uses (not CPython's),
    the public ctypes does the same: a mount id and openat2's errno come out alike."""
    code = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
import _ctypes
del _ctypes.dlsym  # what the private path needs and ctypes' own __init__ does not
from oci_systemd_hook import linux
assert "ctypes" in sys.modules, "the fallback was not taken"
fd = os.open("/", os.O_PATH)
print(linux.mount_id(fd))
try:
    linux.openat2(fd, "no/such/path", os.O_PATH, linux.RESOLVE_IN_ROOT)
except OSError as exc:
    print(exc.errno)
"""
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    fast = subprocess.run([sys.executable, "-I", "-c", code.replace("del _ctypes.dlsym", "pass").replace(
        'assert "ctypes" in sys.modules', 'assert "ctypes" not in sys.modules')], capture_output=True, text=True,
        check=True).stdout
    assert out == fast and out.split()[1] == "2", (out, fast)


def test_socket_constants_are_this_architectures() -> None:
    """libc's socket calls get numbers that differ by architecture (MIPS, Alpha, SPARC,
    PA-RISC, POWER): here they are checked against Python's own, and the relay's socket does
    carry SO_PASSCRED from its bind on."""
    import os

    from oci_systemd_hook import linux

    assert linux._socket_constants(os.uname().machine) == (socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                                           socket.SOL_SOCKET, socket.SO_PASSCRED)
    assert linux._socket_constants("ppc64le")[2] == 20 and linux._socket_constants("mips64")[:2] == (
        1 | os.O_CLOEXEC, 0xFFFF)


RELAY = r"""
import json, os, sys, tempfile, time
sys.path.insert(0, {repo!r})
import socket  # loaded before _socket is blocked: the relay must then take the public module
sys.modules["_socket"] = None
from oci_systemd_hook import linux, notifyrelay
d = tempfile.mkdtemp()
fd = linux.bound_datagram_socket(f"{{d}}/notify", pass_credentials=True)
os.set_inheritable(fd, True)
child = os.fork()
if child == 0:  # the "init": says READY=1, and is gone
    time.sleep(0.3)
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1\nSTATUS=up", f"{{d}}/notify")
    time.sleep(0.3)
    os._exit(0)
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1\nSTATUS=forged", f"{{d}}/notify")
rc = notifyrelay.serve(d, child, fd)
os.waitpid(child, 0)
print(rc, json.dumps(json.load(open(f"{{d}}/notify.json"))))
"""


def test_the_relay_without_the_private_socket_module() -> None:
    res = subprocess.run([sys.executable, "-I", "-c", RELAY.format(repo=str(REPO))], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    rc, record = res.stdout.split(" ", 1)
    state = json.loads(record)
    assert rc == "0" and state["READY"] == "1" and state["STATUS"] == "up", state
    assert (state["messages"], state["ignored"], state["init_exited"]) == (1, 1, True)
