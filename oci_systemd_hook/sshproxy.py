"""`oci-systemd-hook ssh ID`: the host reaches a container's sshd with no network at all.

systemd 256 and later, with openssh-server in the image, bind an sshd socket at
/run/host/unix-export/ssh when the container manager provides that directory
(systemd-ssh-generator). The hook mounts a small tmpfs there, inside the container: what
the container puts in it never lands on the host. `ssh` runs the ssh client with this
module as its ProxyCommand, which reaches the socket through the container's init.

The init is the one prestart recorded (pid and start time, so a reused pid is refused);
the socket is resolved below /proc/PID/root with openat2 (in the root, no symlinks, no
magic links) and must be a socket; the connection goes through /proc/self/fd/N. Root never
follows a name the container chose.
"""

from __future__ import annotations

import errno
import os
import select
import shlex
import socket
import stat
import sys

from oci_systemd_hook.errors import InputError

SOCKET_PATH = "run/host/unix-export/ssh"


def _init_root(state_root: str, cid: str) -> int:
    """An O_PATH descriptor of the root of container `cid`, as its recorded init sees it."""
    from oci_systemd_hook.hoststate import process_start, read_record

    record = read_record(os.path.join(state_root, cid))
    pid = record.get("pid") if record else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        raise InputError(f"container {cid[:64]}: no record of the hook in {state_root} (is it running with it?)")
    if process_start(pid) != record.get("pid_start"):  # type: ignore[union-attr]
        raise InputError(f"container {cid[:64]} is not running (its init {pid} is gone)")
    try:
        return os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"container {cid[:64]}: cannot reach its root: {exc.strerror}") from None


def open_socket(state_root: str, cid: str, connect: bool = True) -> socket.socket | None:
    """A connection to the container's exported sshd socket, never through a symlink (with
    `connect` false: only check that it is there and is a socket)."""
    from oci_systemd_hook import linux

    root = _init_root(state_root, cid)
    try:
        sfd = linux.openat2(root, SOCKET_PATH, os.O_PATH | os.O_NOFOLLOW, linux.RESOLVE_IN_ROOT
                            | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"container {cid[:64]}: /{SOCKET_PATH} is a symlink: refusing to follow it") from None
        raise InputError(f"container {cid[:64]} exports no ssh socket: its systemd must be 256 or later with "
                         "openssh-server installed (systemd-ssh-generator binds it)") from None
    finally:
        os.close(root)
    try:
        mode = os.fstat(sfd).st_mode
        if stat.S_ISLNK(mode):
            raise InputError(f"container {cid[:64]}: /{SOCKET_PATH} is a symlink: refusing to follow it")
        if not stat.S_ISSOCK(mode):
            raise InputError(f"container {cid[:64]}: /{SOCKET_PATH} is not a socket: refusing to use it")
        if not connect:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(f"/proc/self/fd/{sfd}")  # this inode, whatever the name points at now
        except OSError as exc:
            sock.close()
            raise InputError(f"cannot connect to the container's sshd: {exc.strerror}") from None
        return sock
    finally:
        os.close(sfd)


def relay(sock: socket.socket, rfd: int = 0, wfd: int = 1) -> None:
    """Copy stdin to the socket and the socket to stdout until both directions are done."""
    to_sock_open = True
    with sock:
        while True:
            watched = [sock] + ([rfd] if to_sock_open else [])
            readable, _, _ = select.select(watched, [], [])
            if to_sock_open and rfd in readable:
                data = os.read(rfd, 65536)
                if data:
                    sock.sendall(data)
                else:
                    to_sock_open = False
                    sock.shutdown(socket.SHUT_WR)
            if sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(wfd, view):]


def proxy_main(argv: list[str]) -> int:
    """The ProxyCommand: `... sshproxy STATE_ROOT ID`."""
    state_root, cid = argv
    try:
        sock = open_socket(state_root, cid)
        assert sock is not None
        relay(sock)
    except InputError as exc:
        sys.stderr.write(f"oci-systemd-hook ssh: {exc.message}\n")
        return 1
    return 0


def ssh_command(state_root: str, cid: str, user: str, identity: str, command: list[str]) -> list[str]:
    """The ssh client's command line, with this module as the ProxyCommand."""
    from oci_systemd_hook.installer import package_parent

    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from oci_systemd_hook.sshproxy import proxy_main; "
            "sys.exit(proxy_main(sys.argv[1:]))")
    proxy = " ".join(shlex.quote(a) for a in (sys.executable, "-IS", "-c", code, package_parent(), state_root, cid))
    argv = ["ssh", "-o", f"ProxyCommand={proxy}", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]
    if identity:
        argv += ["-i", identity]
    return [*argv, f"{user}@{cid[:12]}", *command]


def run(state_root: str, cid: str, user: str, identity: str, command: list[str]) -> int:
    """`oci-systemd-hook ssh`: check the socket is there, then become the ssh client."""
    open_socket(state_root, cid, connect=False)  # says what is wrong, in one line, before ssh does
    argv = ssh_command(state_root, cid, user, identity, command)
    try:
        os.execvp(argv[0], argv)  # noqa: S606 (the ssh client, not a shell)
    except OSError as exc:
        raise InputError(f"cannot run ssh: {exc.strerror} (install openssh-client)") from None
    return 1  # not reached
