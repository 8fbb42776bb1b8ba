"""The hook's per-container directory on the host and the record prestart leaves in it.

Kept free of ctypes so that poststop, which usually only reads the record and
removes a directory, stays cheap.
"""

from __future__ import annotations

import os

from oci_systemd_hook import jsonlite

__all__ = ["RECORD", "read_record", "write_record"]

RECORD = "record.json"


def write_record(state_dir: str, record: dict[str, object]) -> None:
    """Replace the record atomically, so a crash leaves the old or the new one."""
    tmp = os.path.join(state_dir, RECORD + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, jsonlite.dumps(record).encode())  # one line: read by the hook, not by people
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(state_dir, RECORD))


def read_record(state_dir: str) -> dict[str, object] | None:
    """The record, or None when there is none or it is unreadable (a crash mid-write)."""
    try:
        fd = os.open(os.path.join(state_dir, RECORD), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    try:
        record = jsonlite.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def process_start(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot), None if it does not exist.

    A pid with the same start time is the same process: pids are reused, this pair is not.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    try:
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None
