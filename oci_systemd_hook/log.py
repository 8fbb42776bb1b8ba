"""One line on stderr and one in syslog for everything the hook has to say.

Syslog is spoken directly over a non-blocking datagram socket: the `syslog`
module and glibc may block when /dev/log is full, and on hosts where nothing
listens (this is common in CI and on minimal hosts) a message is simply lost,
never a reason to fail or stall a container start. The `socket` module is not
used because importing it costs as much as the interpreter start-up; where the hook has
loaded its libc bindings (`linux`, for its mounts) it sends through those instead.
"""

from __future__ import annotations

import os
import sys

IDENT = "oci-systemd-hook"
_FACILITY_DAEMON = 3 << 3
_PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}
DEFAULT_SYSLOG_SOCKET = "/dev/log"


class Log:
    """Reports to stderr (errors, warnings, debug) and syslog (everything sent)."""

    def __init__(self, debug: bool = False, syslog_socket: str | None = None) -> None:
        self.debug_enabled = debug
        if syslog_socket is None:
            syslog_socket = os.environ.get("OCI_SYSTEMD_HOOK_SYSLOG_SOCKET", DEFAULT_SYSLOG_SOCKET)
        self.syslog_socket = syslog_socket
        #: Short container id, prefixed to every message once known.
        self.container = ""
        self._sock: object = None

    def error(self, message: str) -> None:
        self._emit("error", message, stderr=True)

    def warning(self, message: str) -> None:
        self._emit("warning", message, stderr=True)

    def info(self, message: str) -> None:
        self._emit("info", message, stderr=self.debug_enabled)

    def debug(self, message: str) -> None:
        if self.debug_enabled:
            self._emit("debug", message, stderr=True)

    def _emit(self, level: str, message: str, stderr: bool) -> None:
        message = " ".join(message.split("\n"))
        prefix = f"{self.container}: " if self.container else ""
        if stderr:
            tag = "" if level in ("info", "debug") else f"{level}: "
            try:
                sys.stderr.write(f"{IDENT}: {prefix}{tag}{message}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        self._syslog(level, prefix + message)

    def _syslog(self, level: str, message: str) -> None:
        if not self.syslog_socket:
            return
        line = f"<{_FACILITY_DAEMON | _PRIORITY[level]}>{IDENT}[{os.getpid()}]: {message}"
        data = line.encode("utf-8", "replace")[:8192]
        try:
            linux = sys.modules.get("oci_systemd_hook.linux")
            if linux is not None:  # prestart has libc at hand already: no socket module to import
                linux.send_datagram(self.syslog_socket, data)  # type: ignore[attr-defined]
                return
            try:
                import _socket  # a C module: cheap, unlike `socket`
            except ImportError:  # an interpreter without CPython's private module
                try:
                    import socket as _socket  # type: ignore[no-redef]
                except ImportError:  # no sockets at all: stderr is all there is
                    self.syslog_socket = ""
                    return

            if self._sock is None:
                sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(data, self.syslog_socket)  # type: ignore[attr-defined]
        except OSError:
            pass  # nobody listening, queue full, no permission: never the hook's problem
