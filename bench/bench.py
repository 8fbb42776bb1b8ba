#!/usr/bin/env python3
"""Start-path benchmark of the hook: wall time and peak RSS of the hook process per stage.

    sudo bench/bench.py [--runs N] [--boot-runs M] [--no-boot] [--out FILE]

Every row runs a fresh process N times (interleaved with the floor, so drift hits all rows
alike) and reports the median and p90 wall time (spawn to reap, measured here) and the
median peak RSS of the child (os.wait4's ru_maxrss, KiB). The hook is run through the same
launcher the tests wire into config.json (tests/hookwiring.write_launcher: /bin/sh, then `python -IS`),
with an empty environment as runc gives its hooks. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGETS = {"skip": 1.5, "prestart": 3.0, "prestart:notify": 3.0, "prestart:copy-up": 3.0, "poststop": 2.0,
           "wrapper:create": 1.5,
           "runc:create+hook": 2.0, "runc:delete+hook": 1.5}
#: Targets in milliseconds added to the base row (pass-through of the wrapper).
TARGETS_MS = {"wrapper:pass": 2.0}


class Sample:
    """N measurements of one row."""

    def __init__(self, name: str, what: str) -> None:
        self.name = name
        self.what = what
        self.ms: list[float] = []
        self.rss: list[int] = []
        self.note = ""
        #: When set, the row is compared as what it adds to `base` (same runs, interleaved).
        self.base: Sample | None = None


    def median(self) -> float:
        return statistics.median(self.ms)

    def p90(self) -> float:
        s = sorted(self.ms)
        return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def _io_actions(io: str, stdin: bytes) -> tuple[str, list[tuple[object, ...]]]:
    inp, err = os.path.join(io, "in"), os.path.join(io, "err")
    with open(inp, "wb") as f:
        f.write(stdin)
    return err, [
        (os.POSIX_SPAWN_OPEN, 0, inp, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]


def spawn(argv: list[str], stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run argv once, straight from this process: (wall ms, exit status, stderr)."""
    with tempfile.TemporaryDirectory(prefix="osh-bench-io-") as io:
        err, actions = _io_actions(io, stdin)
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], argv, {} if env is None else env, file_actions=actions)
        _, status, _ = os.wait4(pid, 0)
        t1 = time.perf_counter_ns()
        with open(err, encoding="utf-8", errors="replace") as f:
            return (t1 - t0) / 1e6, os.waitstatus_to_exitcode(status), f.read()


_PR_SET_CHILD_SUBREAPER = 36


def _subreaper(on: bool) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def spawn_rss(argv: list[str], stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[int, int, str]:
    """Run argv once for its peak RSS: (ru_maxrss KiB, exit status, stderr).

    ru_maxrss counts the memory a process had before its exec: a child spawned (even
    vforked) from this big process would report this process's RSS. So argv is started
    by a small /bin/sh in the background and reaped here, as its subreaper.
    """
    with tempfile.TemporaryDirectory(prefix="osh-bench-io-") as io:
        err, actions = _io_actions(io, stdin)
        pidfile = os.path.join(io, "pid")
        actions.append((os.POSIX_SPAWN_DUP2, 0, 3))  # a background job's stdin is /dev/null: use fd 3
        script = 'pidfile=$1; shift; "$@" <&3 3<&- & echo $! >"$pidfile"'
        sh = ["/bin/sh", "-c", script, "sh", pidfile, *argv]
        _subreaper(True)
        try:
            pid = os.posix_spawn(sh[0], sh, {} if env is None else env, file_actions=actions)
            _, status, _ = os.wait4(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"/bin/sh could not start {argv}")
            with open(pidfile) as f:
                grandchild = int(f.read())
            _, status, usage = os.wait4(grandchild, 0)
        finally:
            _subreaper(False)
        with open(err, encoding="utf-8", errors="replace") as f:
            return usage.ru_maxrss, os.waitstatus_to_exitcode(status), f.read()


def write_bundle(bundle: Path, args: list[str]) -> None:
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    config = {"ociVersion": "1.0.2", "process": {"args": args, "env": ["PATH=/usr/bin:/bin"]},
              "root": {"path": "rootfs"}, "mounts": [],
              "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}}
    (bundle / "config.json").write_text(json.dumps(config))


def state_json(cid: str, bundle: Path, pid: int | None, status: str = "creating") -> bytes:
    state: dict[str, object] = {"ociVersion": "1.0.2", "id": cid, "status": status, "bundle": str(bundle)}
    if pid is not None:
        state["pid"] = pid
    return json.dumps(state).encode()


def hook_rows(python: str, launcher: Path, work: Path, runs: int, rss_runs: int, as_root: bool) -> list[Sample]:
    floor = Sample("floor", f"{python} -I -S -c pass")
    skip = Sample("skip", "prestart, config.json process.args [/bin/sh]: not a systemd container")
    prestart = Sample("prestart", "prestart against a fresh FakeContainer (v1 layout)")
    notify = Sample("prestart:notify", "the same with NOTIFY_SOCKET=/run/host/notify: the relay bound and spawned")
    copyup = Sample("prestart:copy-up", "the same with 24 entries in the image's /run to copy up (Debian 12-13 "
                    "images have 18-28 in /run, /tmp and /var/log/journal)")
    poststop = Sample("poststop", "poststop after that prestart: no pid, status stopped, empty env")
    nostate = Sample("poststop-norecord", "poststop of a container that had no prestart (skip-path bundle)")
    dryrun = Sample("dry-run", "prestart --dry-run (plan only, printed) against a fresh FakeContainer")
    skip_bundle = work / "skip-bundle"
    write_bundle(skip_bundle, ["/bin/sh"])
    skip_state = state_json("osh-bench-skip", skip_bundle, os.getpid())
    skip_args = [str(launcher), "prestart", f"--state-dir={work / 'skip-state'}",
                 f"--journal-root={work / 'skip-journal'}"]
    nostate_in = state_json("osh-bench-skip", skip_bundle, None, "stopped")
    nostate_args = [str(launcher), "poststop", *skip_args[2:]]
    rows = [floor, skip, nostate]

    FakeContainer = None
    if as_root:
        from tests.fakecontainer import FakeContainer  # imports pytest: bench side only

        rows += [prestart, notify, copyup, poststop, dryrun]
    else:
        for s in (prestart, notify, copyup, poststop, dryrun):
            s.note = "skipped: needs root"

    def run(sample: Sample, argv: list[str], data: bytes, mode: str) -> None:
        """mode: "time" (recorded), "rss" (recorded, through /bin/sh) or "" (warm-up)."""
        if mode == "rss":
            rss, rc, err = spawn_rss(argv, data, {})
        else:
            ms, rc, err = spawn(argv, data, {})
        if rc != 0:
            raise SystemExit(f"{sample.name}: {' '.join(argv)} exited {rc}:\n{err}")
        if mode == "rss":
            sample.rss.append(rss)
        elif mode == "time":
            sample.ms.append(ms)

    def one_round(mode: str) -> None:
        run(floor, [python, "-I", "-S", "-c", "pass"], b"", mode)
        run(skip, skip_args, skip_state, mode)
        run(nostate, nostate_args, nostate_in, mode)
        if FakeContainer is None:
            return
        tmp = Path(tempfile.mkdtemp(prefix="fc-", dir=work))
        try:
            with FakeContainer(tmp) as c:
                args = [str(launcher), "prestart", *c.hook_args()]
                run(dryrun, [*args, "--dry-run"], json.dumps(c.state()).encode(), mode)
                run(prestart, args, json.dumps(c.state()).encode(), mode)
                if not (c.state_dir / c.name).is_dir():
                    raise SystemExit("prestart left no state directory: did it act at all?")
            # the container is gone, as when runc/podman run poststop; then the hook
            run(poststop, [str(launcher), "poststop", *c.hook_args()],
                json.dumps(c.state(pid=None, status="stopped")).encode(), mode)
            if (c.state_dir / c.name).exists():
                raise SystemExit("poststop left the state directory behind")
            for sample in (notify, copyup):
                extra = ({"process": {"args": ["/sbin/init"], "env": ["PATH=/usr/bin:/bin",
                                                                      "NOTIFY_SOCKET=/run/host/notify"]}}
                         if sample is notify else None)
                with FakeContainer(tmp / sample.name.replace(":", "-"), config=extra) as c:
                    if sample is copyup:  # 12 directories, 8 files, 4 symlinks
                        for d in range(12):
                            (c.rootfs / "run" / f"d{d}").mkdir()
                            if d < 8:
                                (c.rootfs / "run" / f"d{d}" / "f").write_text("x" * 100)
                            if d < 4:
                                os.symlink(f"d{d}", c.rootfs / "run" / f"l{d}")
                    run(sample, [str(launcher), "prestart", *c.hook_args()], json.dumps(c.state()).encode(), mode)
                run(Sample("-", "-"), [str(launcher), "poststop", *c.hook_args()],
                    json.dumps(c.state(pid=None, status="stopped")).encode(), "")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    one_round("")  # warm caches (page cache, __pycache__, dentries)
    for i in range(runs):
        one_round("time")
        print(f"\rhook rounds: {i + 1}/{runs}", end="", file=sys.stderr, flush=True)
    for _ in range(rss_runs):
        one_round("rss")
    print(file=sys.stderr)
    return rows + [s for s in (prestart, notify, copyup, poststop, dryrun) if s.note]


def boot_rows(launcher: Path, work: Path, runs: int) -> list[Sample]:
    from tests import realboot
    from tests.hookwiring import hooks

    create = Sample("boot:create", "runc create of the Debian 12 image (runs prestart)")
    boot = Sample("boot:running", "runc create -> is-system-running=running (create + start + boot)")
    for i in range(runs):
        tmp = work / f"boot-{i}"
        state_dir, journal_root = tmp / "hook-state", tmp / "journal"
        journal_root.mkdir(parents=True)
        with realboot.Container(tmp / "c", hooks=hooks(launcher, state_dir, journal_root)) as c:
            t0 = time.monotonic()
            c.create()
            t1 = time.monotonic()
            c.start()
            word, failed = c.wait_running(timeout=90)
            t2 = time.monotonic()
            if word != "running":
                raise SystemExit(f"boot {i}: is-system-running said {word!r}; failed units: {failed}\n"
                                 + (c.console_text() or c.output()))
        create.ms.append((t1 - t0) * 1e3)
        boot.ms.append((t2 - t0) * 1e3)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"\rboots: {i + 1}/{runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return [create, boot]


def runc_rows(launcher: Path, work: Path, runs: int) -> list[Sample]:
    """Real `runc create` and `runc delete` of the Debian 12 image, with and without the hook.

    What the hook costs a real container start and removal: the difference of the medians,
    as a share of the interpreter floor. Rounds alternate plain and hooked containers.
    """
    from tests import realboot
    from tests.hookwiring import hooks

    create = Sample("runc:create", "runc create of the Debian 12 image, no hook")
    create_hook = Sample("runc:create+hook", "runc create with the hook as prestart: what it adds to runc:create")
    delete = Sample("runc:delete", "runc delete --force of that created container, no hook")
    delete_hook = Sample("runc:delete+hook", "runc delete --force, hook as poststop: what it adds to runc:delete")
    create_floor = Sample("runc:create+floor", "runc create with `python -I -S -c pass` as the prestart hook: what "
                          "runc's running of any Python hook costs")
    delete_floor = Sample("runc:delete+floor", "runc delete --force with that as the poststop hook")
    create_hook.base, delete_hook.base, create_floor.base, delete_floor.base = create, delete, create, delete
    python = launcher.read_text().split("python='", 1)[1].split("'", 1)[0]
    floor_hook = {"path": python, "args": [python, "-I", "-S", "-c", "pass"]}
    for i in range(runs + 1):  # the first round warms caches and is not recorded
        for variant in ("plain", "floor", "hook"):
            hooked = variant == "hook"
            tmp = work / f"runc-{i}-{variant}"
            state_dir, journal_root = tmp / "hook-state", tmp / "journal"
            journal_root.mkdir(parents=True)
            wired = hooks(launcher, state_dir, journal_root) if hooked else None
            if variant == "floor":
                wired = {"prestart": [floor_hook], "poststop": [floor_hook]}
            with realboot.Container(tmp / "c", hooks=wired) as c:
                # posix_spawn and wait4, as for the hook rows: Container.create goes through
                # subprocess with a timeout, which polls with sleeps of up to 50 ms.
                c.write_config()
                runc = c.ns.command(["runc", "--root", str(c.state_root)])
                c._state["created"] = True  # close() deletes it if anything below fails
                ms_create, rc, err = spawn([shutil.which(runc[0]) or runc[0], *runc[1:], "create", "--bundle",
                                            str(c.bundle), c.id], b"", {"PATH": os.environ.get("PATH", "")})
                if rc != 0:
                    raise SystemExit(f"runc create failed ({rc}): {err}")
                ms_delete, rc, err = spawn([shutil.which(runc[0]) or runc[0], *runc[1:], "delete", "--force", c.id],
                                           b"", {"PATH": os.environ.get("PATH", "")})
                if rc != 0:
                    raise SystemExit(f"runc delete failed ({rc}): {err}")
                c._state["created"] = False
                if hooked and (state_dir / c.id).exists():
                    raise SystemExit("poststop left the hook's state directory behind")
            if i:
                {"plain": create, "floor": create_floor, "hook": create_hook}[variant].ms.append(ms_create)
                {"plain": delete, "floor": delete_floor, "hook": delete_hook}[variant].ms.append(ms_delete)
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"\rrunc rounds: {i}/{runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return [create, create_floor, create_hook, delete, delete_floor, delete_hook]


def wrapper_rows(python: str, work: Path, runs: int) -> list[Sample]:
    """oci-systemd-runtime: its create path (the Python edit of config.json, runc replaced by
    /bin/true) and its pass-through (`state` of a missing container, against runc's own)."""
    from oci_systemd_hook.installer import runtime_text

    wrapper = work / "bin" / "oci-systemd-runtime"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(runtime_text(python, str(REPO), "/usr/libexec/oci/hooks.d/oci-systemd-hook", "/bin/true"))
    wrapper.chmod(0o755)
    passing = work / "bin" / "oci-systemd-runtime-runc"
    runc = shutil.which("runc")
    passing.write_text(runtime_text(python, str(REPO), "/usr/libexec/oci/hooks.d/oci-systemd-hook", runc or ""))
    passing.chmod(0o755)
    bundle = work / "wrapper-bundle"
    write_bundle(bundle, ["/sbin/init"])
    original = (bundle / "config.json").read_bytes()
    create = Sample("wrapper:create", "oci-systemd-runtime create of a systemd bundle (edits config.json; runc is "
                    "/bin/true)")
    plain = Sample("runc:pass", "runc --root EMPTY state missing (fails at once)")
    through = Sample("wrapper:pass", "the same through oci-systemd-runtime: what its /bin/sh front adds")
    through.base = plain
    root = work / "empty-runc-root"
    root.mkdir()
    rows = [create]
    if runc:
        rows += [plain, through]
    else:
        plain.note = through.note = "skipped: no runc"
    for i in range(runs + 1):
        (bundle / "config.json").write_bytes(original)
        ms, rc, err = spawn([str(wrapper), "create", "--bundle", str(bundle), "c1"], b"", {"PATH": "/usr/bin:/bin"})
        if rc != 0 or b"oci-systemd-hook" not in (bundle / "config.json").read_bytes():
            raise SystemExit(f"wrapper:create exited {rc} without adding the hook: {err}")
        if i:
            create.ms.append(ms)
        if runc:
            for sample, argv in ((plain, [runc]), (through, [str(passing)])):
                ms, rc, err = spawn([*argv, "--root", str(root), "state", "missing"], b"", {"PATH": "/usr/bin:/bin"})
                if rc != 1 or "does not exist" not in err:
                    raise SystemExit(f"{sample.name}: expected runc's 'does not exist', got {rc}: {err}")
                if i:
                    sample.ms.append(ms)
    return rows + ([plain, through] if not runc else [])


def table(rows: list[Sample]) -> str:
    floor = statistics.median(rows[0].ms)
    head = ("name", "median ms", "p90 ms", "x floor", "peak RSS KiB", "target", "result")
    lines = []
    for s in rows:
        if s.note:
            lines.append((s.name, "-", "-", "-", "-", f"<= {TARGETS[s.name]}x" if s.name in TARGETS else "-", s.note))
            continue
        med = s.median()
        added = med - s.base.median() if s.base is not None else med
        ratio = added / floor
        rss = str(int(statistics.median(s.rss))) if s.rss else "-"
        shown = "-" if s.name.startswith("boot") or (s.base is None and s.name.startswith("runc:")) else (
            f"+{ratio:.2f}" if s.base is not None else f"{ratio:.2f}")
        if s.name in TARGETS_MS:
            target = f"<= +{TARGETS_MS[s.name]:.0f} ms"
            result = "PASS" if added <= TARGETS_MS[s.name] else "FAIL"
            shown = f"+{added:.1f} ms"
        else:
            target = f"<= {TARGETS[s.name]}x" if s.name in TARGETS else "-"
            result = ("PASS" if ratio <= TARGETS[s.name] else "FAIL") if s.name in TARGETS else "-"
        lines.append((s.name, f"{med:.1f}", f"{s.p90():.1f}", shown, rss, target, result))
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]

    def fmt(r: tuple[str, ...]) -> str:
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    out = [fmt(head), "-+-".join("-" * w for w in widths), *map(fmt, lines)]
    return "\n".join(out)


def legend(rows: list[Sample]) -> str:
    return "\n".join(f"  {s.name:<18} {s.what}" for s in rows)


def failures(rows: list[Sample]) -> list[str]:
    """Rows that miss their target."""
    floor = rows[0].median()
    failed = []
    for s in rows:
        if s.note or not s.ms:
            continue
        added = s.median() - (s.base.median() if s.base is not None else 0.0)
        over_ms = s.name in TARGETS_MS and added > TARGETS_MS[s.name]
        if over_ms or (s.name in TARGETS and added / floor > TARGETS[s.name]):
            failed.append(s.name)
    return failed


def header(python: str, runs: int, rss_runs: int, boot_runs: int, load: list[str]) -> str:
    pyver = subprocess.run([python, "-I", "-S", "-c", "import sys; print(sys.version.split()[0])"],
                           capture_output=True, text=True, check=False).stdout.strip()
    busy = float(load[0]) > len(os.sched_getaffinity(0)) * 0.5
    return "\n".join([
        *(["WARNING: the host was busy (load average above half the CPUs): ratios are unreliable"] if busy else []),
        f"date:    {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"kernel:  {platform.system()} {platform.release()} {platform.machine()}",
        f"python:  {python} ({pyver}), launcher: /bin/sh pinning '{python} -IS'",
        f"cpus:    {os.cpu_count()} online, {len(os.sched_getaffinity(0))} usable; "
        f"load average at the start {' '.join(load[:3])}",
        f"runs:    N={runs} per hook row (interleaved, after 1 warm-up round)"
        + (f"; {boot_runs} boots" if boot_runs else "; boot not run"),
        "times:   wall ms from posix_spawn to wait4 of the hook process (median, p90 nearest-rank)",
        f"rss:     ru_maxrss (wait4) of the hook process, median of {rss_runs} further rounds started via /bin/sh",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=25, help="runs per hook row (default 25)")
    ap.add_argument("--rss-runs", type=int, default=3, help="extra rounds for peak RSS (default 3)")
    ap.add_argument("--boot-runs", type=int, default=5, help="boots of the Debian image (default 5)")
    ap.add_argument("--no-boot", action="store_true", help="skip the runc boot rows")
    ap.add_argument("--runc-runs", type=int, default=15, help="rounds of real runc create/delete with and without "
                    "the hook (default 15; 0: none)")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the launcher and the floor")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "latest.txt"), help="where to write the table")
    opts = ap.parse_args()
    if opts.runs < 1:
        ap.error("--runs must be at least 1")
    as_root = os.geteuid() == 0
    with open("/proc/loadavg") as f:
        load = f.read().split()
    boot_runs = 0 if opts.no_boot or not as_root else opts.boot_runs

    from tests import hookwiring

    work = Path(tempfile.mkdtemp(prefix="osh-bench-"))
    try:
        launcher = hookwiring.write_launcher(work / "bin", opts.python)
        rows = hook_rows(opts.python, launcher, work, opts.runs, opts.rss_runs, as_root)
        rows += wrapper_rows(opts.python, work, opts.runs)
        if as_root and opts.runc_runs > 0 and not opts.no_boot:
            rows += runc_rows(launcher, work, opts.runc_runs)
        if boot_runs:
            rows += boot_rows(launcher, work, boot_runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    text = table(rows)
    report = (header(opts.python, opts.runs, opts.rss_runs, boot_runs, load) + "\n\n" + text
              + "\n\nrows:\n" + legend(rows) + "\n")
    if not as_root:
        report += "\n(not root: prestart, poststop after prestart, dry-run and boot were skipped)\n"
    print(report, end="")
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return 1 if failures(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
