"""The command line: the hook's stages, `plan`, and the tools (loaded only when asked for).

The stage path is hand-parsed: argparse alone costs as much as starting Python,
and the hook runs on every container start.
"""

from __future__ import annotations

import os
import sys

from oci_systemd_hook.errors import EXIT_FAILURE, EXIT_OK, HookError, InputError
from oci_systemd_hook.log import Log
from oci_systemd_hook.ocistate import State
from oci_systemd_hook.settings import KNOBS, Settings

#: stage word -> what the hook does then
STAGES = {"prestart": "prestart", "createRuntime": "prestart", "poststop": "poststop",
          "poststart": "nothing", "createContainer": "unsupported", "startContainer": "unsupported"}
TOOLS = ("install", "uninstall", "validate", "check", "ssh", "status", "wait")
SWITCHES = ("--dry-run", "--json", "--help", "-h", "--version", "-V")
#: Switches that may come before a tool's name (`oci-systemd-hook --debug check ROOTFS`).
GLOBAL_SWITCHES = ("--debug", "-V", "--version", "-h", "--help")
VALUE_OPTIONS = ("--bundle", "--pid", "--id")

USAGE = """\
usage: oci-systemd-hook [prestart|createRuntime|poststop] [OPTIONS] < state.json
       oci-systemd-hook plan [--json] [--bundle DIR [--id ID] [--pid PID]] [OPTIONS] [< state.json]
       oci-systemd-hook {install,uninstall,validate,check,ssh,status,wait} --help

Prepare an OCI container so that systemd boots as its PID 1 (prestart/createRuntime),
and undo it on the host afterwards (poststop). The OCI state comes on stdin.
Without a stage word: the environment variable `stage`, else poststop when the
state says "stopped" or has no pid, else prestart.

options:
  --dry-run            print the plan instead of carrying it out (prestart)
  --json               print the plan as JSON (plan, --dry-run)
  --bundle DIR         plan: the bundle to plan for, instead of a state on stdin
  --id ID              plan: the container id (default: the bundle's name)
  --pid PID            plan: a live container process, to plan cgroups and kept mounts
  --help, -h           show this help
  --version, -V        show the version
"""


def _knob_help() -> str:
    lines = []
    for name, (kind, text) in KNOBS.items():
        arg = "" if kind == "bool" else " " + kind.upper()
        env = "OCI_SYSTEMD_HOOK_" + name.replace("-", "_").upper()
        lines.append(f"  {'--' + name + arg:<20} {text} (env {env})")
    return "\n".join(lines)


def usage() -> str:
    return USAGE + _knob_help() + "\n"


class Args:
    """The parsed command line."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.switches: set[str] = set()
        self.values: dict[str, str] = {}
        self.knobs: list[tuple[str, str]] = []


def parse_args(argv: list[str]) -> Args:
    args = Args()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            args.words.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name in SWITCHES:
            if eq:
                raise InputError(f"option {name} takes no value")
            args.switches.add({"-h": "--help", "-V": "--version"}.get(name, name))
            continue
        knob = name[2:] if name.startswith("--") else ""
        if name in VALUE_OPTIONS or knob in KNOBS:
            if knob in KNOBS and KNOBS[knob][0] == "bool" and not eq:
                args.knobs.append((knob, "true"))
                continue
            if not eq:
                if i >= len(argv):
                    raise InputError(f"option {name} needs a value")
                value = argv[i]
                i += 1
            if name in VALUE_OPTIONS:
                args.values[name[2:]] = value
            else:
                args.knobs.append((knob, value))
            continue
        raise InputError(f"unknown option {arg[:60]!r} (see --help)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `oci-systemd-hook` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    log = Log(debug=os.environ.get("OCI_SYSTEMD_HOOK_DEBUG", "").lower() in ("1", "true", "yes", "on"))
    try:
        code = _run(argv, log)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a closed pipe is caught, not at the exit of Python
        return code
    except HookError as exc:
        log.error(exc.message)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `plan --json | head -1`: the reader has all it wanted
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # and Python's exit flush must not fail again
        except OSError:
            pass
        return 141
    except Exception as exc:  # a bug in the hook: still one line, the traceback only when debugging
        if log.debug_enabled:
            import traceback

            traceback.print_exc()
        log.error(f"internal error: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE


def run() -> None:
    """The launcher's entry: `main`, then leave at once.

    Python's own shutdown tears down every module it loaded: a millisecond or two on each
    container start, for nothing, since the hook's files are closed by then and its output is
    flushed here. (`python -m oci_systemd_hook` and the library keep the ordinary exit.)
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(code)


def _run(argv: list[str], log: Log) -> int:
    lead = 0
    while lead < len(argv) and argv[lead] in GLOBAL_SWITCHES:
        lead += 1
    if lead < len(argv) and argv[lead] in TOOLS:
        from oci_systemd_hook import toolcli

        # The tools run by hand: their messages are for the terminal, not for syslog.
        log.syslog_socket = ""
        before = argv[:lead]
        if "--debug" in before:
            log.debug_enabled = True
        if {"-V", "--version"} & set(before) or {"-h", "--help"} & set(before):
            argv = [a for a in before if a != "--debug"]
        else:
            return int(toolcli.main(argv[lead:], log))
    args = parse_args(argv)
    if "--help" in args.switches:
        sys.stdout.write(usage())
        return EXIT_OK
    if "--version" in args.switches:
        from oci_systemd_hook import __version__

        print(f"oci-systemd-hook {__version__}")
        return EXIT_OK
    settings = Settings()
    settings.apply_env(dict(os.environ))
    for name, value in args.knobs:
        settings.set(name, value, f"--{name}")
    log.debug_enabled = log.debug_enabled or settings.debug

    if args.words and args.words[0] == "plan":
        if len(args.words) > 1:
            raise InputError(f"plan takes no argument {args.words[1][:60]!r}")
        return _plan(args, settings, log)
    if len(args.words) > 1:
        raise InputError(f"unexpected argument {args.words[1][:60]!r} (see --help)")
    stage = args.words[0] if args.words else os.environ.get("stage", "")
    if stage and stage not in STAGES:
        raise InputError(f"unknown stage {stage[:60]!r}: expected prestart, createRuntime or poststop")

    from oci_systemd_hook.ocistate import read_state

    state = read_state(_stdin())
    from oci_systemd_hook.ids import short_id

    log.container = short_id(state.id)
    if not stage:
        stage = "poststop" if state.status == "stopped" or state.pid is None else "prestart"
    action = STAGES[stage]
    if action == "unsupported":
        raise InputError(f"the {stage} stage runs after pivot_root and cannot be used: wire the hook as "
                         "prestart or createRuntime")
    if action == "nothing":
        return EXIT_OK
    if action == "poststop":
        return _poststop(state, settings, log)
    return _prestart(state, settings, log, "--dry-run" in args.switches, "--json" in args.switches)


def _stdin() -> object:
    """Where the OCI state comes from; a terminal gets a hint instead of a silent wait."""
    stdin = sys.stdin
    if stdin is None:
        raise InputError("no OCI state on stdin: stdin is closed (the runtime passes the state there)")
    try:
        interactive = stdin.isatty()
    except (OSError, ValueError):
        interactive = False
    if interactive:
        raise InputError("expects the OCI state on stdin, as a runtime runs its hooks (try --help, or plan "
                         "--bundle DIR)")
    return stdin.buffer


def _print_plan(plan: object, as_json: bool) -> None:
    from oci_systemd_hook.plan import Plan

    assert isinstance(plan, Plan)
    if as_json:
        from oci_systemd_hook import jsonlite

        print(jsonlite.dumps(plan.as_dict(), indent=2))
    else:
        print(plan.render())


def _prestart(state: State, settings: Settings, log: Log, dry_run: bool, as_json: bool) -> int:
    from oci_systemd_hook import api

    if dry_run:
        plan = api.plan_for(state, settings, log)
        if plan is None:
            print("nothing to do: not a systemd container")
        else:
            _print_plan(plan, as_json)
        return EXIT_OK
    api.prestart(state, settings, log)
    return EXIT_OK


def _poststop(state: State, settings: Settings, log: Log) -> int:
    from oci_systemd_hook import api

    api.poststop(state, settings, log)
    return EXIT_OK


def _plan(args: Args, settings: Settings, log: Log) -> int:
    from oci_systemd_hook.ocistate import read_state

    bundle = args.values.get("bundle")
    if bundle:
        from oci_systemd_hook.ids import check_container_id

        pid = args.values.get("pid")
        if pid is not None and not pid.isdigit():
            raise InputError(f"--pid expects a process id, got {pid[:40]!r}")
        bundle = os.path.abspath(bundle)
        cid = check_container_id(args.values.get("id") or os.path.basename(bundle.rstrip("/")))
        state = State(cid, bundle, int(pid) if pid else None)
    else:
        state = read_state(_stdin())
    from oci_systemd_hook import api

    plan = api.plan_for(state, settings, log)
    if plan is None:
        print("nothing to do: the hook does not act on this container (see --debug for why)")
        return EXIT_OK
    _print_plan(plan, "--json" in args.switches)
    return EXIT_OK
