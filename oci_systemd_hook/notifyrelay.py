"""Readiness: what systemd as PID 1 tells its container manager on $NOTIFY_SOCKET.

systemd sends READY=1 once booted, STATUS=... on the way, and X_SYSTEMD_SIGNALS_LEVEL=2
once it handles SIGRTMIN+3 (a halt sent earlier can be lost). With
NOTIFY_SOCKET=/run/host/notify in the container's env, prestart starts this relay: a
small process, detached from the hook (its own session, stdio on /dev/null, so that the
runtime does not wait for it), in the host's namespaces. It binds a datagram socket at
`<state-dir>/<id>/notify`, which prestart binds over /run/host/notify, and records what
systemd says in `<state-dir>/<id>/notify.json` for `status` and `wait`.

Only the container's init speaks for it: each datagram carries its sender's credentials
(SO_PASSCRED), and what another process sends (the container's root may write to the
socket) is counted as ignored, never recorded.

Bounded by design: datagrams are read into a fixed buffer (longer ones are cut), only
known keys are kept, each value cut to MAX_VALUE, the record rewritten at most every
WRITE_INTERVAL seconds; it writes only those two names in its own directory (opened once,
O_NOFOLLOW); it exits when the container's init exits (a pidfd), and poststop ends it too.
"""

from __future__ import annotations

import os
import sys
import time

from oci_systemd_hook import jsonlite
from oci_systemd_hook.hoststate import replace_file

SOCKET = "notify"
RECORD = "notify.json"
KEYS = ("READY", "STATUS", "STOPPING", "RELOADING", "ERRNO", "EXIT_STATUS", "X_SYSTEMD_SIGNALS_LEVEL",
        "X_SYSTEMD_UNIT_ACTIVE", "X_SYSTEMD_UNIT_INACTIVE")
MAX_DATAGRAM = 4096
MAX_VALUE = 256
WRITE_INTERVAL = 0.05


def parse(datagram: bytes) -> dict[str, str]:
    """KEY=VALUE lines of a notification, known keys only, values cut."""
    found: dict[str, str] = {}
    for line in datagram.decode("utf-8", "replace").split("\n"):
        key, eq, value = line.partition("=")
        if eq and key in KEYS:
            found[key] = value[:MAX_VALUE]
    return found


def _write(dfd: int, state: dict[str, object]) -> None:
    replace_file(RECORD, jsonlite.dumps(state).encode(), 0o644, dir_fd=dfd)


def sender(cmsgs: list[tuple[int, int, bytes]], sol_socket: int, scm_credentials: int) -> int:
    """The pid (in the relay's pid namespace, the host's) that SCM_CREDENTIALS names; 0 if none.
    (SOL_SOCKET differs by architecture: the socket module's numbers are passed in.)"""
    for level, kind, data in cmsgs:
        if level == sol_socket and kind == scm_credentials and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder, signed=True)
    return 0


def serve(state_dir: str, pid: int, sock_fd: int) -> int:
    """Relay what arrives on the bound socket `sock_fd` until the init `pid` exits."""
    import select

    try:
        import _socket  # not `socket`, whose import costs as much as a start-up
    except ImportError:  # an interpreter without CPython's private module
        import socket as _socket  # type: ignore[no-redef]

    sock = _socket.socket(fileno=sock_fd)
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # the container is gone already
        sock.close()
        os.close(dfd)
        return 1
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)  # the hook set it already; harmless twice
    ancillary = _socket.CMSG_SPACE(12)  # struct ucred: pid, uid, gid
    # What other processes send (the container's root may write to the socket, as the init's
    # children may) is counted, never recorded: only the init speaks for the container.
    state: dict[str, object] = {"relay_pid": os.getpid(), "messages": 0, "ignored": 0}
    _write(dfd, state)
    dirty, last = False, 0.0
    try:
        while True:
            timeout = max(0.0, WRITE_INTERVAL - (time.monotonic() - last)) if dirty else None
            readable, _, _ = select.select([sock_fd, pidfd], [], [], timeout)
            if pidfd in readable:
                break
            if sock_fd in readable:
                try:
                    datagram, cmsgs, _, _ = sock.recvmsg(MAX_DATAGRAM, ancillary)  # a longer one cut
                except OSError:
                    continue
                if sender(cmsgs, _socket.SOL_SOCKET, _socket.SCM_CREDENTIALS) != pid:
                    state["ignored"] = int(state["ignored"]) + 1  # type: ignore[call-overload]
                    dirty = True
                    continue
                fields = parse(datagram)
                state["messages"] = int(state["messages"]) + 1  # type: ignore[call-overload]
                if fields:
                    state.update(fields)
                    dirty = True
            if dirty and time.monotonic() - last >= WRITE_INTERVAL:
                _write(dfd, state)
                dirty, last = False, time.monotonic()
        state["init_exited"] = True
        _write(dfd, state)
    finally:
        sock.close()
        os.close(pidfd)
        try:
            os.unlink(SOCKET, dir_fd=dfd)
        except OSError:
            pass
        os.close(dfd)
    return 0


def bind(state_dir: str, uid: int, gid: int) -> int:
    """Bind the relay's socket at `<state_dir>/notify` (here, so that prestart can mount it at
    once); return its descriptor. Only root and the container's root may send to it."""
    from oci_systemd_hook import linux  # loaded by prestart already: no socket module to import

    dfd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        # Through the directory descriptor: the name cannot be redirected, and the path stays
        # short (AF_UNIX allows 107 bytes).
        fd = linux.bound_datagram_socket(f"/proc/self/fd/{dfd}/{SOCKET}", pass_credentials=True)
        try:
            os.chown(SOCKET, uid, gid, dir_fd=dfd, follow_symlinks=False)
            os.chmod(SOCKET, 0o600, dir_fd=dfd, follow_symlinks=False)
        except BaseException:
            os.close(fd)
            raise
        return fd
    finally:
        os.close(dfd)


def spawn(state_dir: str, pid: int, fd: int) -> int:
    """Start the relay, detached, on the bound socket `fd` (which stays the caller's to close);
    return its pid. Nothing waits for the relay's own start-up: prestart spawns it last, so
    that its start competes with nothing of the hook's."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # not installer: it loads json
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from oci_systemd_hook.notifyrelay import main; "
            "sys.exit(main(sys.argv[1:]))")
    argv = [sys.executable, "-IS", "-c", code, package_parent, state_dir, str(pid), "3"]
    # Its own session, stdio on /dev/null: the runtime waits for the hook's output pipes to
    # close, and the relay must not hold them. (dup2(3, 3) would keep close-on-exec.)
    spare = os.dup(fd) if fd == 3 else -1
    try:
        return os.posix_spawn(sys.executable, argv, {}, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, spare if spare >= 0 else fd, 3),
        ])
    finally:
        if spare >= 0:
            os.close(spare)


def main(argv: list[str]) -> int:
    state_dir, pid, sock_fd = argv
    return serve(state_dir, int(pid), int(sock_fd))


def read_state(state_root: str, cid: str) -> dict[str, object] | None:
    """What the relay recorded for `cid`, None when there is no record."""
    try:
        fd = os.open(os.path.join(state_root, cid, RECORD), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    try:
        value = jsonlite.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
