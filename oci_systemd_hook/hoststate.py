"""The hook's per-container directory on the host and the record prestart leaves in it.

Kept free of ctypes so that poststop, which usually only reads the record and
removes a directory, stays cheap.
"""

from __future__ import annotations

import os

from oci_systemd_hook import jsonlite

__all__ = ["RECORD", "read_record", "replace_file", "write_record"]

RECORD = "record.json"


def replace_file(name: str, data: bytes, mode: int = 0o600, dir_fd: int | None = None) -> None:
    """Replace `name` (below `dir_fd`, if given) atomically through `name`.tmp, so that a crash
    leaves the old content or the new one; neither name is followed if it is a symlink."""
    tmp = name + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def write_record(state_dir: str, record: dict[str, object], text: str | None = None) -> None:
    """Replace the record atomically (`text`: the record already serialised)."""
    # One line: read by the hook, not by people.
    replace_file(os.path.join(state_dir, RECORD), (jsonlite.dumps(record) if text is None else text).encode())


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
