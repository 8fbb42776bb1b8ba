"""`oci-systemd-hook ssh ID`: the host reaches a container's sshd with no network at all.

systemd 256 and later, with openssh-server in the image, bind an sshd socket at
/run/host/unix-export/ssh when the container manager provides that directory
(systemd-ssh-generator). The hook binds it from `<state-dir>/<id>/unix-export` on the
host, a small tmpfs of the container's (mode 0700, the container root's), so that
`ssh -o ProxyCommand='socat - UNIX-CONNECT:<state-dir>/<id>/unix-export/ssh'` works too.
`ssh` runs the ssh client with this module as its ProxyCommand instead, which needs no
socat and never follows a name the container chose.

The directory is the container's: it may put a symlink to any host socket there. The
socket is resolved below the directory with openat2 (beneath, no symlinks, no magic links,
not into another mount) and must be a socket inode; the connection goes through
/proc/self/fd/N, to that very inode. The directory must still be the tmpfs prestart
mounted (a mount of its own), and the container's init the one it recorded.
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

EXPORT_DIR = "unix-export"
SOCKET_NAME = "ssh"


def _export_dir(state_root: str, cid: str) -> int:
    """An O_PATH descriptor of container `cid`'s unix-export tmpfs on the host."""
    from oci_systemd_hook import linux
    from oci_systemd_hook.hoststate import process_start, read_record

    state_dir = os.path.join(state_root, cid)
    record = read_record(state_dir)
    pid = record.get("pid") if record else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        raise InputError(f"container {cid[:64]}: no record of the hook in {state_root} (is it running with it?)")
    if process_start(pid) != record.get("pid_start"):  # type: ignore[union-attr]
        raise InputError(f"container {cid[:64]} is not running (its init {pid} is gone)")
    try:
        sfd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"container {cid[:64]}: cannot open {state_dir}: {exc.strerror}") from None
    try:
        try:
            dfd = linux.openat2(sfd, EXPORT_DIR, os.O_PATH | os.O_DIRECTORY, linux.RESOLVE_BENEATH
                                | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS)
        except OSError:
            raise InputError(f"container {cid[:64]} has no {EXPORT_DIR} directory (prepared by an older hook?)") \
                from None
        if linux.mount_id(dfd) == linux.mount_id(sfd):
            os.close(dfd)
            raise InputError(f"container {cid[:64]}: {state_dir}/{EXPORT_DIR} is not mounted (is it running?)")
        return dfd
    finally:
        os.close(sfd)


def open_socket(state_root: str, cid: str, connect: bool = True) -> socket.socket | None:
    """A connection to the container's exported sshd socket, never through a symlink (with
    `connect` false: only check that it is there and is a socket)."""
    from oci_systemd_hook import linux

    where = f"/run/host/{EXPORT_DIR}/{SOCKET_NAME}"
    dfd = _export_dir(state_root, cid)
    try:
        sfd = linux.openat2(dfd, SOCKET_NAME, os.O_PATH | os.O_NOFOLLOW, linux.RESOLVE_BENEATH
                            | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS | linux.RESOLVE_NO_XDEV)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"container {cid[:64]}: {where} is a symlink: refusing to follow it") from None
        raise InputError(f"container {cid[:64]} exports no ssh socket: its systemd must be 256 or later with "
                         "openssh-server installed (systemd-ssh-generator binds it)") from None
    finally:
        os.close(dfd)
    try:
        mode = os.fstat(sfd).st_mode
        if stat.S_ISLNK(mode):
            raise InputError(f"container {cid[:64]}: {where} is a symlink: refusing to follow it")
        if not stat.S_ISSOCK(mode):
            raise InputError(f"container {cid[:64]}: {where} is not a socket: refusing to use it")
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
