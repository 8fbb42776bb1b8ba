"""Who owns what on the host: machine-id claims and the journal store.

Two things a container names on the host outlive a single hook run, and a tenant
can aim them at someone else's with `container_uuid=`:

* **machine ids**: `<state-root>/.machine-ids/<mid>` is a symlink whose target is
  the container id holding it. A claim counts only while that container's state
  directory exists, so a crash leaves nothing that blocks a later container.
  (Container ids never start with a dot, so the name cannot clash with one.)
* **journal directories**: the directory bound writable into a container lives in
  `<journal-root>/.oci-systemd-hook/<mid>/`, inside a directory only root may
  enter (mode 0700), next to `<mid>.owner` naming the container id it was made
  for. `<journal-root>/<mid>` is a symlink to it, which is where `journalctl -D`
  and `journalctl -m` find it. Anything at `<journal-root>/<mid>` that is not
  exactly that symlink (the host's own journal, another manager's) is never
  adopted, changed or removed. The registry lives with the journals rather than
  in /run so that it lasts exactly as long as they do: a restart after a reboot
  still finds its own directory.

The private directory is what keeps host users out: container root can make a
setuid binary or a device node in its journal directory, but nobody except root
can reach into it from the host.
"""

from __future__ import annotations

import errno
import os
import stat

from oci_systemd_hook.errors import HookError

MID_CLAIMS = ".machine-ids"
JOURNAL_STORE = ".oci-systemd-hook"
OWNER_SUFFIX = ".owner"
MAX_OWNER_BYTES = 512

FREE = None  # journal_owner(): nothing there
NOT_OURS = ""  # journal_owner(): something the hook did not make


# --- machine ids ------------------------------------------------------------------------------

def mid_claims(state_root: str) -> dict[str, str]:
    """Live claims: machine id -> container id (only containers whose state exists)."""
    claims: dict[str, str] = {}
    base = os.path.join(state_root, MID_CLAIMS)
    try:
        names = os.listdir(base)
    except OSError:
        return claims
    for name in names:
        try:
            cid = os.readlink(os.path.join(base, name))
        except OSError:
            continue
        if "/" not in cid and not cid.startswith(".") and os.path.isdir(os.path.join(state_root, cid)):
            claims[name] = cid
    return claims


def claim_mid(state_root: str, mid: str, cid: str) -> bool:
    """Claim `mid` for `cid`; True if this call made the claim, False if it was ours already."""
    base = os.path.join(state_root, MID_CLAIMS)
    path = os.path.join(base, mid)
    for _ in range(5):
        try:
            os.mkdir(base, 0o755)
        except FileExistsError:
            pass
        try:
            os.symlink(cid, path)
            return True
        except FileExistsError:
            pass
        except FileNotFoundError:  # the last poststop removed the empty directory meanwhile
            continue
        try:
            holder = os.readlink(path)
        except FileNotFoundError:
            continue
        except OSError:
            holder = ""
        if holder == cid:
            return False
        if holder and "/" not in holder and not holder.startswith(".") and os.path.isdir(
                os.path.join(state_root, holder)):
            raise HookError(f"machine id {mid} is held by the live container {holder[:64]}")
        try:
            os.unlink(path)  # a stale claim: its container is gone
        except FileNotFoundError:
            pass
    raise HookError(f"cannot claim machine id {mid}: it keeps changing")


def release_mid(state_root: str, mid: str, cid: str) -> None:
    """Drop the claim on `mid` if `cid` holds it (and the claims directory once empty)."""
    base = os.path.join(state_root, MID_CLAIMS)
    try:
        if os.readlink(os.path.join(base, mid)) == cid:
            os.unlink(os.path.join(base, mid))
        os.rmdir(base)
    except OSError:
        pass


# --- the journal store ------------------------------------------------------------------------

def journal_link(journal_root: str, mid: str) -> str:
    return os.path.join(journal_root, mid)


def journal_data(journal_root: str, mid: str) -> str:
    return os.path.join(journal_root, JOURNAL_STORE, mid)


def _link_target(mid: str) -> str:
    return JOURNAL_STORE + "/" + mid


def _open_store(journal_root: str, create: bool) -> int | None:
    """An fd of the private store, made when `create`; None when it does not exist.

    Refuses a store that is not a root-owned directory closed to everyone else: the
    hook relies on it to keep host users out of the directories below.
    """
    root_fd = os.open(journal_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if create:
            try:
                os.mkdir(JOURNAL_STORE, 0o700, dir_fd=root_fd)
            except FileExistsError:
                pass
        try:
            fd = os.open(JOURNAL_STORE, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise HookError(f"{os.path.join(journal_root, JOURNAL_STORE)} is not a directory") from None
            raise
        st = os.fstat(fd)
        if st.st_uid != 0 or st.st_mode & 0o077:
            os.close(fd)
            raise HookError(f"{os.path.join(journal_root, JOURNAL_STORE)} must be owned by root with mode 0700; "
                            "not linking journals through it")
        return fd
    finally:
        os.close(root_fd)


def open_store(journal_root: str) -> int | None:
    """An fd of the private store (None when there is none); HookError when it is not private."""
    return _open_store(journal_root, create=False)


def read_owner(store_fd: int, mid: str) -> str | None:
    """The container id `<mid>.owner` names, None without one."""
    return _read_owner(store_fd, mid)


def _owner_lines(store_fd: int, mid: str) -> list[str] | None:
    """`<mid>.owner`: the container id, then the state root of the hook that made it."""
    try:
        fd = os.open(mid + OWNER_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=store_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        lines = os.read(fd, MAX_OWNER_BYTES).decode("utf-8", "replace").splitlines()
        return [line.strip() for line in lines] or [""]
    finally:
        os.close(fd)


def _read_owner(store_fd: int, mid: str) -> str | None:
    lines = _owner_lines(store_fd, mid)
    return None if lines is None else lines[0]


def owner_state_root(store_fd: int, mid: str) -> str:
    """The state root of the hook that made `<mid>` ("" if it did not say): where its container is live."""
    lines = _owner_lines(store_fd, mid) or []
    return lines[1] if len(lines) > 1 and lines[1].startswith("/") else ""


def journal_owner(journal_root: str, mid: str) -> str | None:
    """Who `<journal-root>/<mid>` belongs to: FREE (None), NOT_OURS (""), or a container id."""
    link = journal_link(journal_root, mid)
    try:
        st = os.lstat(link)
    except FileNotFoundError:
        st = None
    except OSError:
        return NOT_OURS
    if st is not None:
        if not stat.S_ISLNK(st.st_mode):
            return NOT_OURS
        try:
            if os.readlink(link) != _link_target(mid):
                return NOT_OURS
        except OSError:
            return NOT_OURS
    try:
        store = _open_store(journal_root, create=False)
    except (HookError, OSError):
        return NOT_OURS
    if store is None:
        return FREE if st is None else NOT_OURS
    try:
        owner = _read_owner(store, mid)
        if owner is not None:
            return owner or NOT_OURS
        try:
            os.lstat(mid, dir_fd=store)
            return NOT_OURS  # data without an owner: never guess
        except FileNotFoundError:
            return FREE if st is None else NOT_OURS
    finally:
        os.close(store)


def claim_journal(journal_root: str, mid: str, cid: str, mode: int, uid: int | None, gid: int | None,
                  state_root: str = "") -> bool:
    """Make (or reuse) `cid`'s journal directory for `mid`; True if it was made now.

    Raises HookError when the place belongs to someone else, so a race with another
    claimant never ends in adopting its directory.
    """
    for _ in range(3):
        try:
            return _claim_journal(journal_root, mid, cid, mode, uid, gid, state_root)
        except FileNotFoundError:  # a poststop removed the empty store meanwhile: make it again
            continue
    return _claim_journal(journal_root, mid, cid, mode, uid, gid, state_root)


def _link_is_free_or_ours(link: str, mid: str) -> bool:
    try:
        return os.readlink(link) == _link_target(mid)
    except FileNotFoundError:
        return True
    except OSError:  # EINVAL: not a symlink
        return False


def _claim_journal(journal_root: str, mid: str, cid: str, mode: int, uid: int | None, gid: int | None,
                   state_root: str) -> bool:
    link = journal_link(journal_root, mid)
    if not _link_is_free_or_ours(link, mid):
        raise HookError(f"{link} exists and is not the hook's: not linking the journal")
    store = _open_store(journal_root, create=True)
    assert store is not None
    try:
        owner = _read_owner(store, mid)
        created = False
        if owner is None:
            if os.path.lexists(link):
                raise HookError(f"{link} exists without an owner: not using it")
            try:
                os.lstat(mid, dir_fd=store)
                raise HookError(f"{journal_data(journal_root, mid)} exists without an owner: not using it")
            except FileNotFoundError:
                pass
            tmp = f"{mid}{OWNER_SUFFIX}.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=store)
            try:
                os.write(fd, cid.encode() + b"\n" + (state_root.encode() + b"\n" if state_root else b""))
            finally:
                os.close(fd)
            try:
                os.link(tmp, mid + OWNER_SUFFIX, src_dir_fd=store, dst_dir_fd=store)  # fails if someone was first
            except FileExistsError:
                raise HookError(f"journal {mid} was claimed by another container meanwhile") from None
            finally:
                os.unlink(tmp, dir_fd=store)
            os.mkdir(mid, mode, dir_fd=store)
            created = True
        elif owner != cid:
            raise HookError(f"journal {mid} belongs to container {owner[:64]}")
        else:
            try:
                os.mkdir(mid, mode, dir_fd=store)  # an earlier claim died before making it
                created = True
            except FileExistsError:
                pass
        dfd = os.open(mid, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=store)
        try:
            os.fchmod(dfd, mode)
            if uid is not None and gid is not None:
                os.fchown(dfd, uid, gid)
        finally:
            os.close(dfd)
    finally:
        os.close(store)
    try:
        os.symlink(_link_target(mid), link)
    except FileExistsError:
        if not _link_is_free_or_ours(link, mid):  # someone else was faster: undo what this call made
            if created:
                remove_journal(journal_root, mid, cid, keep_link=True)
            raise HookError(f"{link} exists and is not the hook's: not linking the journal") from None
    return created


def remove_journal(journal_root: str, mid: str, cid: str, keep_link: bool = False) -> bool:
    """Remove `cid`'s journal for `mid` (data, owner and link); False if it is not `cid`'s."""
    from oci_systemd_hook.removal import remove_tree_at

    try:
        store = _open_store(journal_root, create=False)
    except (HookError, OSError):
        return False
    if store is None:
        return False
    try:
        if _read_owner(store, mid) != cid:
            return False
        link = journal_link(journal_root, mid)
        try:
            if not keep_link and os.readlink(link) == _link_target(mid):
                os.unlink(link)
        except OSError:
            pass
        try:
            remove_tree_at(store, mid)
        except FileNotFoundError:
            pass
        os.unlink(mid + OWNER_SUFFIX, dir_fd=store)
    finally:
        os.close(store)
    drop_empty_store(journal_root)
    return True


def drop_empty_store(journal_root: str) -> None:
    """Remove the private store once it holds nothing."""
    try:
        os.rmdir(os.path.join(journal_root, JOURNAL_STORE))
    except OSError:
        pass
