"""`oci-systemd-hook check --bundle DIR`: what in a bundle's config.json will systemd trip on?

A `runc spec` bundle with the README's hooks reaches only `degraded`: runc spec grants three
capabilities, and journald, dbus and logind fail for the want of the others. This reads
config.json (trusted: it is the user's own) and names, each as one finding: missing
capabilities with the units they break, no /sys/fs/cgroup mount, the hook not wired in,
the stop signal, and rlimits above what this host allows.
"""

from __future__ import annotations

from oci_systemd_hook.activation import decide
from oci_systemd_hook.imagefs import shown
from oci_systemd_hook.report import Report

#: capability -> (severity when missing, what fails without it). Measured with the Debian 12
#: image under runc: with CAP_SETPCAP, CAP_SETUID and CAP_SETGID added to `runc spec`'s three,
#: systemd reaches `running`.
CAPABILITIES = (
    ("CAP_SETPCAP", "warning", "units that limit their capabilities (systemd-journald, systemd-logind, dbus) fail "
                               "with 218/CAPABILITIES"),
    ("CAP_SETUID", "warning", "units that run as another user (dbus as messagebus, systemd-timesyncd) fail with "
                              "217/USER"),
    ("CAP_SETGID", "warning", "units that run as another group fail with 216/GROUP"),
    ("CAP_KILL", "warning", "systemd cannot stop services of other users at shutdown"),
    ("CAP_CHOWN", "info", "units with StateDirectory= or RuntimeDirectory= owned by another user cannot be "
                          "handed over"),
    ("CAP_DAC_OVERRIDE", "info", "root cannot open files other users own (some unit set-ups expect it)"),
    ("CAP_FOWNER", "info", "root cannot change the mode of files other users own"),
)
_RLIMITS = {"RLIMIT_NOFILE": 7, "RLIMIT_NPROC": 6, "RLIMIT_MEMLOCK": 8, "RLIMIT_CORE": 4, "RLIMIT_STACK": 3}


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def check_bundle(bundle: str) -> Report:
    from oci_systemd_hook.spec import load_config, parse_spec

    report = Report(bundle, "bundle")
    config = load_config(bundle)
    spec = parse_spec(config, bundle)  # refuses, in one line, what the hook itself would refuse
    assert isinstance(config, dict)  # parse_spec refused anything else
    process = _dict(config.get("process"))

    act, why = decide(spec, {})
    if act:
        report.add("ok", "command", f"the hook acts on this container: {why}")
    else:
        report.add("warning", "command", f"the hook will not act on this container: {shown(why)}; run /sbin/init "
                   "(or set the annotation oci-systemd-hook.enable=true)")

    caps = _dict(process.get("capabilities"))
    bounding = {c for c in _list(caps.get("bounding")) if isinstance(c, str)}
    effective = {c for c in _list(caps.get("effective")) if isinstance(c, str)}
    for cap, severity, breaks in CAPABILITIES:
        if cap in bounding and cap in effective:
            report.add("ok", "capabilities", f"{cap} is granted")
        else:
            report.add(severity, "capabilities", f"{cap} is not granted (process.capabilities bounding and "
                                                 f"effective): {breaks}")
    if "CAP_SYS_ADMIN" in bounding:
        report.add("info", "capabilities", "CAP_SYS_ADMIN is granted: systemd boots without it, and with it the "
                                           "container can remount and unmount what the hook set up")

    cgroup = [m for m in spec.mounts if m.destination == "/sys/fs/cgroup"]
    if not cgroup:
        report.add("error", "cgroup", "config.json mounts nothing at /sys/fs/cgroup: systemd dies with \"Failed to "
                                      "mount tmpfs at /sys/fs/cgroup\"; add {\"destination\": \"/sys/fs/cgroup\", "
                                      "\"type\": \"cgroup\", \"source\": \"cgroup\", \"options\": "
                                      "[\"ro\", \"nosuid\", \"noexec\", \"nodev\"]}")
    else:
        report.add("ok", "cgroup", f"/sys/fs/cgroup is mounted ({cgroup[-1].type or 'bind'})")

    hooks = _dict(config.get("hooks"))
    def wired(stage: str) -> bool:
        return any("oci-systemd-hook" in str(_dict(h).get("path", "")) + " ".join(
            str(a) for a in _list(_dict(h).get("args"))) for h in _list(hooks.get(stage)))
    if wired("prestart") or wired("createRuntime"):
        report.add("ok", "hooks", "the hook runs at prestart/createRuntime")
    else:
        report.add("warning", "hooks", "the hook is not in hooks.prestart or hooks.createRuntime (fine when podman "
                                       "or CRI-O add it from hooks.d): systemd will not boot without it")
    if (wired("prestart") or wired("createRuntime")) and not wired("poststop"):
        report.add("warning", "hooks", "the hook is not in hooks.poststop: its state stays behind on the host")
    for stage in ("createContainer", "startContainer"):
        if wired(stage):
            report.add("error", "hooks", f"the hook is in hooks.{stage}, which runs after pivot_root: use "
                                         "prestart or createRuntime")

    if process.get("terminal") is True:
        report.add("info", "terminal", "process.terminal is true: `runc create` then needs --console-socket "
                                       "(or use `runc run` in a terminal)")
    if spec.readonly:
        report.add("info", "root", "root.readonly is true: the hook mounts a volatile /var/lib/systemd; the "
                                   "journal is volatile unless it is linked to the host")
    report.add("info", "stop", "stop systemd with SIGRTMIN+3 for a clean halt: `runc kill ID 37` (runc 1.1 does "
                               "not know the name), `docker stop`/`podman stop` with --stop-signal=RTMIN+3")

    import resource

    for entry in _list(process.get("rlimits")):
        rl = _dict(entry)
        name, hard = rl.get("type"), rl.get("hard")
        if not isinstance(name, str) or name not in _RLIMITS or not isinstance(hard, int):
            continue
        host_hard = resource.getrlimit(_RLIMITS[name])[1]
        if host_hard != resource.RLIM_INFINITY and hard > host_hard:
            report.add("error", "rlimits", f"{name} hard {hard} is above this host's {host_hard}: without "
                                           "CAP_SYS_RESOURCE the runtime fails with \"error setting rlimit\"")
    return report


def run(bundle: str, as_json: bool) -> int:
    report = check_bundle(bundle)
    if as_json:
        import json

        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.render())
    return report.exit_status
