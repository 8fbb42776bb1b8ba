"""SELinux labels: libselinux's Python bindings where they import, the kernel's xattr otherwise.

Only a container with `linux.mountLabel` ever gets here, so the bindings (a C extension)
are imported on that path alone. Without them the hook still labels what it makes, through
the security.selinux xattr, but cannot tell an invalid label from a valid one before the
kernel refuses it.
"""

from __future__ import annotations

import os

_UNSET = object()
_module: object = _UNSET


def bindings() -> object | None:
    """The `selinux` module (libselinux's bindings), or None where it is not installed."""
    global _module  # noqa: PLW0603  (one import attempt per process)
    if _module is _UNSET:
        try:
            import selinux

            _module = selinux
        except ImportError:
            _module = None
    return None if _module is _UNSET else _module


def enabled() -> bool:
    se = bindings()
    if se is not None:
        try:
            return bool(se.is_selinux_enabled() == 1)  # type: ignore[attr-defined]
        except OSError:
            return False
    return os.path.exists("/sys/fs/selinux/enforce")


def valid(label: str) -> bool | None:
    """Is `label` a context the loaded policy knows? None when that cannot be asked."""
    se = bindings()
    if se is None:
        return None
    try:
        return bool(se.security_check_context(label) == 0)  # type: ignore[attr-defined]
    except OSError:
        return False


def set_label(path: str, label: str) -> None:
    """Label `path` itself (never what a symlink there points to)."""
    se = bindings()
    if se is not None:
        se.lsetfilecon(path, label)  # type: ignore[attr-defined]
        return
    os.setxattr(path, "security.selinux", label.encode(), follow_symlinks=False)
