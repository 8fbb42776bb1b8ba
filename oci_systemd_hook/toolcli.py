"""The command line of the tools (`install`, `uninstall`, `validate`, `check`): argparse, then
the module that does the work. Never on a container start, so argparse is fine here."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from oci_systemd_hook.errors import EXIT_OK, InputError
from oci_systemd_hook.hooksfile import validate
from oci_systemd_hook.installer import DOCKER_CONFIG, DOCKER_RUNTIME_NAME, PROG, install, uninstall
from oci_systemd_hook.log import Log


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as InputError (one line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        # The log line starts with the program's name already: name only the subcommand.
        where = self.prog[len(PROG):].strip()
        raise InputError(f"{where}: {message}" if where else message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Install the hook, validate hooks.d files, check images.")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{install,uninstall,validate,check,ssh,status,wait}")
    inst = sub.add_parser("install", help="install the launcher, the hooks.d JSON file and the man page",
                          description="Write PREFIX/libexec/oci/hooks.d/oci-systemd-hook (a launcher that runs "
                          "this package with `python -IS`), the two hooks.d JSON files in PREFIX/share/containers/"
                          "oci/hooks.d/, PREFIX/bin/oci-systemd-runtime (runc with the hook added, for Docker and "
                          "containerd), the man page, and a manifest of those files for uninstall. "
                          "Safe to run again.")
    inst.add_argument("--destdir", default="", help="stage the files under this directory (for packaging)")
    inst.add_argument("--prefix", default="/usr", help="installation prefix (default /usr)")
    inst.add_argument("--python", default=sys.executable,
                      help="interpreter the launcher pins (default: this one, %(default)s)")
    inst.add_argument("--package-dir", default="",
                      help="directory holding the oci_systemd_hook package that the launcher pins (default: where "
                      "this one is); give the final path when staging with --destdir")
    inst.add_argument("--runc", default="", help="the real runc that oci-systemd-runtime runs (default: "
                      "$OCI_SYSTEMD_RUNTIME_RUNC, else the first runc on PATH that is not the wrapper)")
    uninst = sub.add_parser("uninstall", help="remove exactly what install wrote",
                            description="Remove the files listed in PREFIX/share/oci-systemd-hook/installed-files, "
                            "the manifest, and the directories install created if they are now empty.")
    uninst.add_argument("--destdir", default="", help="the --destdir given to install")
    uninst.add_argument("--prefix", default="/usr", help="the --prefix given to install (default /usr)")
    for one in (inst, uninst):
        one.add_argument("--docker", action="store_true", help=("register" if one is inst else "unregister") +
                         f" oci-systemd-runtime as Docker's runtime {DOCKER_RUNTIME_NAME!r} in --docker-config")
        one.add_argument("--docker-config", metavar="FILE",
                         help=f"dockerd's daemon.json, a host path even with --destdir (default {DOCKER_CONFIG}); "
                         "implies --docker")
    val = sub.add_parser("validate", help="validate an oci-hooks(5) JSON file",
                         description="Validate a hooks.d JSON file against the oci-hooks 1.0.0 schema shipped "
                         "with this package, and check that its regular expressions compile. "
                         "Exit 0 if valid, 2 if not.")
    val.add_argument("file", metavar="FILE")
    val.add_argument("--root", default="/", help="check hook.path below this directory (a package's staging "
                     "root; default /)")
    chk = sub.add_parser("check", help="can this image boot systemd in a container?",
                         description="Check an image root for what systemd needs to boot as PID 1 in a container. "
                         "Exit 0: no problem (ok or info only); 1: warnings (boots, something fails); "
                         "2: errors (cannot boot).")
    chk.add_argument("rootfs", metavar="ROOTFS", nargs="?", help="an image's root directory")
    chk.add_argument("--bundle", metavar="DIR", help="check a bundle's config.json instead: capabilities, the "
                     "/sys/fs/cgroup mount, the hook wired in, rlimits")
    chk.add_argument("--json", action="store_true", help="print the findings as a JSON object")
    ssh = sub.add_parser("ssh", help="run ssh into a container through its exported sshd socket (no network)",
                         description="Connect to the sshd that systemd-ssh-generator (systemd 256 and later, with "
                         "openssh-server in the image) binds at /run/host/unix-export/ssh, through "
                         "STATE-DIR/ID/unix-export/ssh on the host, and run COMMAND there (a shell without one).")
    ssh.add_argument("id", metavar="ID", help="the container id")
    ssh.add_argument("remote", metavar="COMMAND", nargs=argparse.REMAINDER, help="what to run in the container")
    ssh.add_argument("--state-dir", default=None, help="the hook's --state-dir (default: "
                     "$OCI_SYSTEMD_HOOK_STATE_DIR, else /run/oci-systemd-hook)")
    ssh.add_argument("-l", "--user", default="root", help="the user to log in as (default root)")
    ssh.add_argument("-i", "--identity", default="", help="the private key ssh uses")
    stat_ = sub.add_parser("status", help="what the container's systemd told the hook's notify relay",
                           description="Print the boot state the container's systemd sent on NOTIFY_SOCKET="
                           "/run/host/notify (READY, STATUS, X_SYSTEMD_SIGNALS_LEVEL). Exit 0 when it is ready, 1 "
                           "when not (yet), 2 when there is no record (no relay: is NOTIFY_SOCKET set?).")
    wait = sub.add_parser("wait", help="wait until the container's systemd says READY=1",
                          description="Return 0 once the container's systemd has sent READY=1 (then a SIGRTMIN+3 "
                          "is safe), 2 on timeout or when it cannot become ready.")
    wait.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    for one in (stat_, wait):
        one.add_argument("id", metavar="ID", help="the container id")
        one.add_argument("--state-dir", default=None, help="the hook's --state-dir")
    for one in (inst, uninst, val, chk, ssh, stat_, wait):
        one.add_argument("--debug", action="store_true", help="log every step")
    return parser


def _status(state_root: str, cid: str, timeout: float | None) -> int:
    """`status` (timeout None) and `wait`: what the notify relay recorded."""
    import time

    from oci_systemd_hook.notifyrelay import read_state

    deadline = time.monotonic() + (timeout or 0)
    while True:
        state = read_state(state_root, cid)
        ready = bool(state) and state.get("READY") == "1"  # type: ignore[union-attr]
        gone = bool(state) and state.get("init_exited") is True  # type: ignore[union-attr]
        if timeout is None or ready or gone or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if state is None:
        if timeout is None:
            print(f"{cid}: no notify record (is NOTIFY_SOCKET=/run/host/notify in its env, and is it running?)")
        else:
            print(f"{cid}: not ready after {timeout:g}s: no notify record")
        return 2
    level = state.get("X_SYSTEMD_SIGNALS_LEVEL", "")
    word = "ready" if ready else ("stopped" if gone else "starting")
    print(f"{cid}: {word}" + (f", status: {state['STATUS']}" if state.get("STATUS") else "")
          + (f", signals level {level}" if level else "") + f" ({state.get('messages', 0)} messages"
          + (f", {state['ignored']} ignored from other processes than the init" if state.get("ignored") else "")
          + ")")
    if timeout is None:
        return 0 if ready else 1
    return 0 if ready else 2


def _docker_config(args: argparse.Namespace) -> str | None:
    """The daemon.json to edit, or None when neither --docker nor --docker-config was given."""
    if args.docker_config is not None:
        return str(args.docker_config)
    return DOCKER_CONFIG if args.docker else None


def main(argv: list[str], log: Log) -> int:
    """Run one tool; `argv` starts with the subcommand word."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.debug:
        log.debug_enabled = True
    if args.command == "install":
        return install(args.destdir, args.prefix, args.python, log, args.package_dir, args.runc,
                       _docker_config(args))
    if args.command == "uninstall":
        return uninstall(args.destdir, args.prefix, log, _docker_config(args))
    if args.command == "validate":
        validate(args.file, args.root)
        print(f"{args.file}: valid oci-hooks 1.0.0")
        return EXIT_OK
    if args.command in ("ssh", "status", "wait"):
        import os

        from oci_systemd_hook.ids import check_container_id
        from oci_systemd_hook.settings import Settings

        settings = Settings()
        settings.apply_env(dict(os.environ))
        if args.state_dir is not None:
            settings.set("state-dir", args.state_dir, "--state-dir")
        cid = check_container_id(args.id)
        if args.command == "ssh":
            from oci_systemd_hook import sshproxy

            return sshproxy.run(settings.state_dir, cid, args.user, args.identity, args.remote)
        return _status(settings.state_dir, cid, args.timeout if args.command == "wait" else None)
    if (args.rootfs is None) == (args.bundle is None):
        raise InputError("check: give either ROOTFS (an image) or --bundle DIR (a bundle's config.json)")
    if args.bundle is not None:
        from oci_systemd_hook import bundlecheck

        return bundlecheck.run(args.bundle, args.json)
    from oci_systemd_hook.imagecheck import run

    return run(args.rootfs, args.json)
