"""Journal retention: the journals of containers that are gone do not pile up (the C hook's #76).

At poststop, after the container's own journal is dealt with, the journal directories the
hook made (the registry's `<mid>.owner` files in the private store) whose container is no
longer live are looked at, oldest first (by the newest time anything in them was written):
those older than the maximum age are removed, then more of the oldest until the total is
within the maximum use. Anything the hook did not make (the host's own journal, another
manager's) is not in the store and is never looked at; a live container's journal is kept.
"""

from __future__ import annotations

import os
import stat

from oci_systemd_hook import registry
from oci_systemd_hook.errors import HookError
from oci_systemd_hook.ids import is_machine_id
from oci_systemd_hook.log import Log

#: Entries counted per directory when sizing it: a container can fill its journal with
#: millions of files; beyond this the directory counts as at least this big.
MAX_ENTRIES_SIZED = 100_000


def _usage(dfd: int) -> tuple[int, float]:
    """(bytes used, newest mtime) of a journal directory; counts at most MAX_ENTRIES_SIZED entries."""
    st = os.fstat(dfd)
    used, newest, seen = st.st_blocks * 512, st.st_mtime, 0
    stack = [os.dup(dfd)]
    try:
        while stack:
            cur = stack.pop()
            try:
                with os.scandir(cur) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > MAX_ENTRIES_SIZED:
                            return used, newest
                        try:
                            est = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        used += est.st_blocks * 512
                        newest = max(newest, est.st_mtime)
                        if stat.S_ISDIR(est.st_mode) and len(stack) < 64:
                            try:
                                stack.append(os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                                     | os.O_CLOEXEC, dir_fd=cur))
                            except OSError:
                                pass
            finally:
                os.close(cur)
    finally:
        for fd in stack:
            os.close(fd)
    return used, newest


def apply(journal_root: str, state_root: str, max_age: int, max_use: int, now: float, log: Log) -> list[str]:
    """Remove gone containers' journals beyond `max_age` seconds or `max_use` bytes in total (0: no
    limit); return the machine ids removed."""
    if not max_age and not max_use:
        return []
    try:
        store = registry.open_store(journal_root)
    except (OSError, HookError):  # no journal root, or a store that is not private: not ours to clean
        return []
    if store is None:
        return []
    candidates: list[tuple[float, str, str, int]] = []
    try:
        for name in os.listdir(store):
            mid = name[:-len(registry.OWNER_SUFFIX)]
            if not name.endswith(registry.OWNER_SUFFIX) or not is_machine_id(mid):
                continue
            owner = registry.read_owner(store, mid)
            # Live where the hook that made it keeps its state (a journal root may be shared by hooks
            # with different state roots), or here.
            roots = {state_root, registry.owner_state_root(store, mid) or state_root}
            if not owner or any(os.path.isdir(os.path.join(root, owner)) for root in roots):
                continue  # unreadable, or the container is live: kept
            try:
                dfd = os.open(mid, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=store)
            except OSError:
                continue
            try:
                used, newest = _usage(dfd)
            finally:
                os.close(dfd)
            candidates.append((newest, mid, owner, used))
    finally:
        os.close(store)
    candidates.sort()
    total = sum(c[3] for c in candidates)
    removed: list[str] = []
    for newest, mid, owner, used in candidates:
        too_old = max_age and now - newest > max_age
        too_much = max_use and total > max_use
        if not (too_old or too_much):
            continue
        if registry.remove_journal(journal_root, mid, owner):
            total -= used
            removed.append(mid)
            why = "older than the maximum age" if too_old else "over the maximum use"
            log.info(f"retention: removed the journal {registry.journal_link(journal_root, mid)} of the gone "
                     f"container {owner[:64]} ({why})")
    return removed
