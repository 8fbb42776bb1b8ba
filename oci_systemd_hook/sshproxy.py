"""`oci-systemd-hook ssh ID`: the host reaches a container's sshd with no network at all.

systemd 256 and later, with openssh-server in the image, bind an sshd socket at
/run/host/unix-export/ssh when the container manager provides that directory
(systemd-ssh-generator); the hook binds it from `<state-dir>/<id>/host/unix-export`.
`ssh` runs the ssh client with this module as its ProxyCommand, which connects to that
socket and relays bytes.

The directory is writable by the container: its `ssh` may be a symlink to any socket on
the host. The proxy opens it with O_PATH | O_NOFOLLOW below the (root-owned) state
directory, checks that this very inode is a socket, and connects through
/proc/self/fd/N, so root never follows a path the container chose.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import stat
import sys

from oci_systemd_hook.errors import InputError
from oci_systemd_hook.plan import UNIX_EXPORT

SOCKET_NAME = "ssh"


def export_dir(state_root: str, cid: str) -> str:
    return os.path.join(state_root, cid, "host", UNIX_EXPORT)


def open_socket(state_root: str, cid: str, connect: bool = True) -> socket.socket | None:
    """A connection to the container's exported sshd socket, never through a symlink (with
    `connect` false: only check that it is there and is a socket)."""
    path = export_dir(state_root, cid)
    try:
        dfd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"container {cid[:64]}: no {path} ({exc.strerror}): is it running with the hook?") from None
    try:
        try:
            sfd = os.open(SOCKET_NAME, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            raise InputError(f"container {cid[:64]} exports no ssh socket: its systemd must be 256 or later with "
                             "openssh-server installed (systemd-ssh-generator binds it)") from None
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISSOCK(os.fstat(sfd).st_mode):
            raise InputError(f"{path}/{SOCKET_NAME} is not a socket: refusing to use it")
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
