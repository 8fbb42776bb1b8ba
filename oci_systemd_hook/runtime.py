"""`oci-systemd-runtime`: runc, with the hook added to a systemd container's config.json.

Docker and containerd (and so Kubernetes on containerd) have no hooks.d directory; what
they do have is a configurable runtime binary with runc's command line. The wrapper's
/bin/sh front (installer.runtime_text) execs the real runc at once for every subcommand
but `create` and `run`; for those it runs this module, which edits the bundle's
config.json when the hook's own activation rules say "systemd container", and then execs
runc with the unchanged command line.

config.json is the runtime caller's file (trusted for its paths); what decides here is
the container's env and annotations (untrusted), and they can only switch the hook on or
off for that container: the hook entries and the mount added are fixed.
"""

from __future__ import annotations

import os
import sys

from oci_systemd_hook import jsonlite
from oci_systemd_hook.errors import HookError, InputError
from oci_systemd_hook.settings import ENV_PREFIX

PROG = "oci-systemd-runtime"
#: runc's global options that take a value (`--root X` or `--root=X`; Go also takes `-root`).
GLOBAL_VALUE_OPTIONS = ("root", "log", "log-format", "criu", "rootless")
#: Options of `runc create`/`runc run` that take a value.
CREATE_VALUE_OPTIONS = ("bundle", "b", "console-socket", "pid-file", "preserve-fds", "pidfd-socket")
#: The NOTIFY_SOCKET the hook serves (plan.NOTIFY_PATH; not imported: plan is not on this path).
NOTIFY_PATH = "/run/host/notify"
#: The read-only cgroup mount systemd needs and ctr's default spec lacks (what Docker adds).
CGROUP_MOUNT = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}


class Invocation:
    """What the wrapper needs from runc's command line."""

    def __init__(self) -> None:
        self.command = ""
        self.bundle = ""
        self.log = ""
        self.log_format = "text"


def _option(arg: str) -> tuple[str, str | None]:
    """`--name=value` -> (name, value); `--name`/`-name` -> (name, None)."""
    name, eq, value = arg.lstrip("-").partition("=")
    return name, value if eq else None


def parse_runc_args(argv: list[str]) -> Invocation:
    """Find the subcommand, the bundle and where runc logs, as runc itself would."""
    inv = Invocation()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not inv.command:
            if arg == "--":
                continue
            if not arg.startswith("-") or arg == "-":
                inv.command = arg
                continue
            name, value = _option(arg)
            if name in GLOBAL_VALUE_OPTIONS:
                if value is None:
                    value = argv[i] if i < len(argv) else ""
                    i += 1
                if name == "log":
                    inv.log = value
                elif name == "log-format":
                    inv.log_format = value
            continue
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            continue  # the container id
        name, value = _option(arg)
        if name in CREATE_VALUE_OPTIONS:
            if value is None:
                value = argv[i] if i < len(argv) else ""
                i += 1
            if name in ("bundle", "b"):
                inv.bundle = value
    return inv


def wants_hook(config: dict[str, object]) -> bool:
    """The hook's own activation rules (activation.decide), read leniently from raw JSON.

    A config.json the hook would refuse still gets the hook when it asks for systemd: the
    hook then says what is wrong, once, at prestart. A bad annotation value is refused here.
    """
    from oci_systemd_hook.activation import decide
    from oci_systemd_hook.spec import Spec

    spec = Spec()
    process = config.get("process")
    if isinstance(process, dict):
        args = process.get("args")
        if isinstance(args, list):
            spec.args = [a for a in args if isinstance(a, str)]
        env = process.get("env")
        if isinstance(env, list):
            for item in env:
                if isinstance(item, str) and "=" in item:
                    key, _, value = item.partition("=")
                    spec.env[key] = value
    annotations = config.get("annotations")
    if isinstance(annotations, dict):
        spec.annotations = {k: v for k, v in annotations.items() if isinstance(v, str)}
    act, _ = decide(spec, {})
    return act


def hook_env(environ: dict[str, str]) -> list[str]:
    """The hook's settings from the wrapper's own environment (dockerd's or containerd's).

    runc starts hooks with only the `env` of their entry; the OCI_SYSTEMD_HOOK_* variables
    of whoever runs the runtime are how an administrator sets the hook's knobs for Docker
    and containerd (a systemd drop-in, say). That environment is the host's, not the
    container's: process.env never reaches it.
    """
    return sorted(f"{k}={v}" for k, v in environ.items() if k.startswith(ENV_PREFIX) and "\0" not in k + v)


def _hook_entry(hook: str, stage: str, env: list[str]) -> dict[str, object]:
    entry: dict[str, object] = {"path": hook, "args": ["oci-systemd-hook", stage]}
    if env:
        entry["env"] = list(env)
    return entry


def add_hook(config: dict[str, object], hook: str, env: list[str] | None = None) -> bool:
    """Add the hook (after the hooks already there), NOTIFY_SOCKET and the cgroup mount; False if all
    were there."""
    changed = False
    hooks = config.get("hooks")
    if hooks is None:
        hooks = config["hooks"] = {}
    if not isinstance(hooks, dict):
        raise InputError("config.json: hooks must be an object")
    for stage, also in (("prestart", ("createRuntime",)), ("poststop", ())):
        present = False
        for key in (stage, *also):
            entries = hooks.get(key)
            if entries is None:
                continue
            if not isinstance(entries, list):
                raise InputError(f"config.json: hooks.{key} must be an array")
            present = present or any(isinstance(e, dict) and e.get("path") == hook for e in entries)
        if not present:
            hooks.setdefault(stage, []).append(_hook_entry(hook, stage, env or []))
            changed = True
    from oci_systemd_hook.spec import clean_container_path

    process = config.get("process")
    if isinstance(process, dict):  # systemd's readiness, for `oci-systemd-hook wait` (unless it has a socket)
        env = process.get("env")
        if env is None:
            env = process["env"] = []
        if isinstance(env, list) and not any(isinstance(e, str) and e.startswith("NOTIFY_SOCKET=") for e in env):
            env.append("NOTIFY_SOCKET=" + NOTIFY_PATH)
            changed = True
    mounts = config.get("mounts")
    if mounts is None:
        mounts = config["mounts"] = []
    if not isinstance(mounts, list):
        raise InputError("config.json: mounts must be an array")
    if not any(isinstance(m, dict) and isinstance(m.get("destination"), str)
               and clean_container_path(m["destination"]) == "/sys/fs/cgroup" for m in mounts):
        mounts.append(dict(CGROUP_MOUNT, options=list(CGROUP_MOUNT["options"])))
        changed = True
    return changed


def write_config(path: str, config: dict[str, object]) -> None:
    """Replace config.json atomically (a new file renamed over it), keeping mode and owner."""
    st = os.stat(path)
    data = (jsonlite.dumps(config) + "\n").encode()
    tmp = os.path.join(os.path.dirname(path), f".config.json.{PROG}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, st.st_mode & 0o7777)
            if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
                os.fchown(fd, st.st_uid, st.st_gid)
            # No fsync: the file lives as long as this container's creation, which a crash
            # ends anyway; the rename alone makes readers see the old or the new file.
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def prepare(inv: Invocation, hook: str) -> bool:
    """Edit `<bundle>/config.json` for a systemd container; True if it was rewritten."""
    from oci_systemd_hook.spec import load_config

    bundle = inv.bundle or "."
    path = os.path.join(bundle, "config.json")
    try:
        config = load_config(bundle)
    except InputError:
        return False  # missing, unreadable, not JSON: runc says so in its own words
    if not isinstance(config, dict) or not wants_hook(config):
        return False
    if not add_hook(config, hook, hook_env(dict(os.environ))):
        return False
    try:
        write_config(path, config)
    except (ValueError, RecursionError):
        raise HookError(f"cannot write {os.path.abspath(path)} back: it is nested too deeply") from None
    except OSError as exc:
        raise HookError(f"cannot add the hook to {os.path.abspath(path)}: {exc.strerror}") from None
    return True


def report(message: str, inv: Invocation) -> None:
    """One error line as runc writes it: to its --log file (JSON or text) when it has one, and stderr."""
    import time

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = f"{PROG}: {message}"
    if inv.log:
        if inv.log_format == "json":
            line = jsonlite.dumps({"level": "error", "msg": text, "time": stamp})
        else:
            line = f'time="{stamp}" level=error msg={jsonlite.dumps(text)}'
        try:
            fd = os.open(inv.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass
        sys.stderr.write(text + "\n")
    else:
        sys.stderr.write(f'time="{stamp}" level=error msg={jsonlite.dumps(text)}\n')
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    """`argv`: the real runc, the hook launcher, then runc's own command line."""
    if len(argv) < 2:
        sys.stderr.write(f"{PROG}: started without its pins; run it through the installed launcher\n")
        return 1
    runc, hook, args = argv[0], argv[1], argv[2:]
    inv = parse_runc_args(args)
    if inv.command in ("create", "run"):
        try:
            prepare(inv, hook)
        except HookError as exc:
            report(exc.message, inv)
            return 1
    try:
        os.execv(runc, [runc, *args])  # noqa: S606 (runc's own argv, no shell)
    except OSError as exc:
        report(f"cannot run {runc}: {exc.strerror}", inv)
        return 127 if exc.errno == 2 else 126
    return 1  # not reached
