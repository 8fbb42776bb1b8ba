"""`install` and `uninstall`: the files a container engine needs to find the hook.

`install` writes a launcher, an oci-hooks(5) JSON file and the man page, and a manifest
of exactly what it wrote, which `uninstall` reads to remove exactly that. They run by
hand or from a package's build, never on a container start.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile

from oci_systemd_hook.errors import EXIT_OK, HookError, InputError
from oci_systemd_hook.log import Log

PROG = "oci-systemd-hook"
LAUNCHER = "libexec/oci/hooks.d/oci-systemd-hook"
#: The runc-compatible runtime wrapper for Docker and containerd (and Kubernetes on containerd).
RUNTIME = "bin/oci-systemd-runtime"
#: The name under which `install --docker` registers the wrapper in daemon.json.
DOCKER_RUNTIME_NAME = "oci-systemd"
DOCKER_CONFIG = "/etc/docker/daemon.json"
HOOK_JSON = "share/containers/oci/hooks.d/oci-systemd-hook.json"
#: podman ANDs the conditions of one file's `when`: the force-on annotation needs a file of its own.
HOOK_JSON_ANNOTATION = "share/containers/oci/hooks.d/oci-systemd-hook-annotation.json"
MAN_PAGE = "share/man/man1/oci-systemd-hook.1"
MANIFEST = "share/oci-systemd-hook/installed-files"
#: The conditions under which a container engine runs the hook: a command named init or systemd.
COMMANDS_REGEX = "(^|/)(init|systemd)$"
#: ... or the annotation that forces it on (a wrapper script as PID 1); the hook reads the value itself.
ENABLE_KEY_REGEX = "^oci-systemd-hook\\.enable$"
ENABLE_VALUE_REGEX = "(?i)^(1|true|yes|on|enable|enabled)$"
HOOKS_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")


def package_parent() -> str:
    """The directory that holds the oci_systemd_hook package (what the launcher puts on sys.path)."""
    import oci_systemd_hook

    return os.path.dirname(os.path.dirname(os.path.abspath(oci_systemd_hook.__file__)))


#: Characters a pinned path may not hold: the launcher quotes it for /bin/sh.
_UNSAFE_IN_PATH = frozenset("'\"\\$`\n\t ")


def launcher_text(python: str, package_dir: str) -> str:
    """A /bin/sh launcher that runs the package in `package_dir` with `python -IS`.

    A `#!python` line would be cheaper by one exec, but when that interpreter is gone (a
    removed virtual environment, an upgraded distribution) the kernel fails the exec and the
    runtime reports "no such file or directory" about the hook itself. The shell checks
    both pins and says which one is gone, in one line.
    -I: no environment variables, no user site, no script directory on sys.path.
    -S: no `site` import, which costs 3x the interpreter start; the hook needs only the stdlib.
    """
    return ("#!/bin/sh\n"
            "# oci-systemd-hook launcher, written by `oci-systemd-hook install`.\n"
            f"python='{python}'\n"
            f"package_dir='{package_dir}'\n"
            'if [ ! -x "$python" ]; then\n'
            '    echo "oci-systemd-hook: error: the launcher $0 runs $python, which is gone: reinstall the hook '
            '(oci-systemd-hook install --python ...)" >&2\n'
            "    exit 1\n"
            "fi\n"
            'if [ ! -f "$package_dir/oci_systemd_hook/cli.py" ]; then\n'
            '    echo "oci-systemd-hook: error: the launcher $0 runs the package in $package_dir, which is gone: '
            'reinstall the hook (oci-systemd-hook install --package-dir ...)" >&2\n'
            "    exit 1\n"
            "fi\n"
            'exec "$python" -IS -c \'import sys; sys.path.append(sys.argv.pop(1)); '
            "from oci_systemd_hook.cli import run; run()' \"$package_dir\" \"$@\"\n")


def runtime_text(python: str, package_dir: str, hook: str, runc: str) -> str:
    """The /bin/sh front of `oci-systemd-runtime`.

    Docker calls its runtime at least five times per container (create, start, state,
    kill, delete): every subcommand but `create` and `run` goes straight to runc, with the
    cost of one small shell and no Python. The real runc is the pinned one (`install
    --runc`), else $OCI_SYSTEMD_RUNTIME_RUNC, else the first runc on PATH that is not this
    file (it may be installed as `runc` ahead of the real one).
    """
    return ("#!/bin/sh\n"
            "# oci-systemd-runtime: runc, with oci-systemd-hook added to systemd containers.\n"
            "# Written by `oci-systemd-hook install`; only create and run start Python.\n"
            f"python='{python}'\n"
            f"package_dir='{package_dir}'\n"
            f"hook='{hook}'\n"
            f"runc='{runc}'\n"
            'fail() {\n'
            '    stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ 2>/dev/null)\n'
            '    echo "time=\\"$stamp\\" level=error msg=\\"oci-systemd-runtime: $1\\"" >&2\n'
            "    exit 1\n"
            "}\n"
            'if [ -z "$runc" ]; then\n'
            '    runc=${OCI_SYSTEMD_RUNTIME_RUNC:-}\n'
            '    ! [ "$runc" -ef "$0" ] || fail "OCI_SYSTEMD_RUNTIME_RUNC names this wrapper, not the real runc"\n'
            "fi\n"
            'if [ -z "$runc" ]; then\n'
            "    set -f\n"
            "    saved_ifs=$IFS\n"
            "    IFS=:\n"
            '    for dir in ${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}; do\n'
            '        if [ -n "$dir" ] && [ -f "$dir/runc" ] && [ -x "$dir/runc" ] && ! [ "$dir/runc" -ef "$0" ]; then\n'
            '            runc=$dir/runc\n'
            "            break\n"
            "        fi\n"
            "    done\n"
            "    IFS=$saved_ifs\n"
            "    set +f\n"
            '    [ -n "$runc" ] || fail "no runc found on PATH (install --runc PATH, or set '
            'OCI_SYSTEMD_RUNTIME_RUNC)"\n'
            "fi\n"
            "sub=\n"
            "skip=\n"
            "for arg do\n"
            '    if [ -n "$skip" ]; then skip=; continue; fi\n'
            '    case $arg in\n'
            "        --root|--log|--log-format|--criu|--rootless|-root|-log|-log-format|-criu|-rootless) skip=1 ;;\n"
            "        -*) ;;\n"
            "        *) sub=$arg; break ;;\n"
            "    esac\n"
            "done\n"
            'case $sub in\n'
            "    create|run) ;;\n"
            '    *) exec "$runc" "$@" ;;\n'
            "esac\n"
            '[ -x "$python" ] || fail "this wrapper runs $python, which is gone: reinstall '
            '(oci-systemd-hook install)"\n'
            '[ -f "$package_dir/oci_systemd_hook/runtime.py" ] || fail "this wrapper runs the package in $package_dir, '
            'which is gone: reinstall (oci-systemd-hook install)"\n'
            'exec "$python" -IS -c \'import sys; sys.path.append(sys.argv.pop(1)); '
            "from oci_systemd_hook.runtime import main; sys.exit(main(sys.argv[1:]))' "
            '"$package_dir" "$runc" "$hook" "$@"\n')


def hook_config(launcher: str) -> dict[str, object]:
    return {"version": "1.0.0",
            "hook": {"path": launcher, "args": [PROG]},
            "when": {"commands": [COMMANDS_REGEX]},
            "stages": ["prestart", "poststop"]}


def hook_json(launcher: str) -> str:
    return json.dumps(hook_config(launcher), indent=2) + "\n"


def annotation_hook_json(launcher: str) -> str:
    """The second hooks file: the same hook, when the container asks for it by annotation.

    When both files match (an init command and the annotation), the engine runs the hook
    twice; the second prestart finds the container prepared and does nothing, and poststop
    is idempotent.
    """
    config = dict(hook_config(launcher), when={"annotations": {ENABLE_KEY_REGEX: ENABLE_VALUE_REGEX}})
    return json.dumps(config, indent=2) + "\n"


def man_source() -> str | None:
    """The built man page shipped next to the package (a source checkout), if there is one."""
    candidates = (os.path.join(package_parent(), "man", "oci-systemd-hook.1"),  # a checkout
                  os.path.join(os.path.dirname(os.path.abspath(__file__)), "oci-systemd-hook.1"),
                  os.path.join(sys.prefix, MAN_PAGE))  # pip's data_files
    return next((c for c in candidates if os.path.isfile(c)), None)


def _check_prefix(prefix: str) -> str:
    if not prefix.startswith("/") or "\0" in prefix:
        raise InputError(f"--prefix must be an absolute path, got {prefix[:80]!r}")
    return os.path.normpath(prefix)


def _staged(destdir: str, path: str) -> str:
    """`path` (an installed path) under destdir."""
    return os.path.join(os.path.abspath(destdir), path.lstrip("/")) if destdir else path


def _makedirs(destdir: str, directory: str, created: list[str]) -> None:
    """Create the installed directory `directory` under destdir; record each one created."""
    if os.path.isdir(_staged(destdir, directory)):
        return
    parent = os.path.dirname(directory)
    if parent != directory:
        _makedirs(destdir, parent, created)
    try:
        os.mkdir(_staged(destdir, directory), 0o755)
    except FileExistsError:
        if not os.path.isdir(_staged(destdir, directory)):
            raise InputError(f"cannot install into {_staged(destdir, directory)}: it is not a directory") from None
        return
    created.append(directory)


def _write_atomic(target: str, data: bytes, mode: int) -> bool:
    """Replace `target` with `data` through a temporary file and rename; False if it was identical."""
    try:
        st = os.lstat(target)
        if os.path.isdir(target) and not os.path.islink(target):
            raise InputError(f"cannot install {target}: a directory is in the way")
        if (st.st_mode & 0o7777) == mode and os.path.isfile(target) and not os.path.islink(target):
            with open(target, "rb") as f:
                if f.read(len(data) + 1) == data:
                    return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True


def read_manifest(path: str) -> tuple[list[str], list[str]]:
    """(files, directories) listed in an install manifest."""
    files: list[str] = []
    dirs: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            kind, _, item = line.partition(" ")
            if kind not in ("file", "dir") or not item.startswith("/") or os.path.normpath(item) != item:
                raise InputError(f"{path}:{number}: not a manifest line: {line[:80]!r}")
            (files if kind == "file" else dirs).append(item)
    return files, dirs


def _manifest_text(files: list[str], dirs: list[str]) -> str:
    lines = ["# Written by `oci-systemd-hook install`; `oci-systemd-hook uninstall` removes these files,",
             "# this manifest, and the directories that install created once they are empty.",
             "# Paths are as installed (without --destdir)."]
    lines += [f"dir {d}" for d in sorted(set(dirs))]
    lines += [f"file {f}" for f in sorted(set(files))]
    return "\n".join(lines) + "\n"


def install(destdir: str, prefix: str, python: str, log: Log, package_dir: str = "", runc: str = "",
            docker_config: str | None = None) -> int:
    prefix = _check_prefix(prefix)
    package_dir = package_dir.rstrip("/") or package_parent()
    for option, value in (("--python", python), ("--package-dir", package_dir), ("--runc", runc or "/")):
        if not value.startswith("/") or set(value) & _UNSAFE_IN_PATH or len(value) > 400:
            raise InputError(f"{option} must be an absolute path without spaces, quotes or $, got {value[:80]!r}")
    runtime = os.path.join(prefix, RUNTIME)
    if runc:
        if not any(os.path.isfile(p) and os.access(p, os.X_OK) for p in {runc, _staged(destdir, runc)}):
            raise InputError(f"--runc {runc}: not an executable file")
        if os.path.normpath(runc) == runtime or _same_file(runc, _staged(destdir, runtime)):
            raise InputError(f"--runc {runc}: that is the wrapper itself; give the real runc")
    # The pins are final paths: with --destdir they may exist below it only (a package being built).
    if not any(os.path.isfile(p) and os.access(p, os.X_OK) for p in {python, _staged(destdir, python)}):
        raise InputError(f"--python {python}: not an executable file")
    if not any(os.path.isfile(os.path.join(p, "oci_systemd_hook", "cli.py"))
               for p in {package_dir, _staged(destdir, package_dir)}):
        raise InputError(f"--package-dir {package_dir}: holds no oci_systemd_hook package")
    launcher = os.path.join(prefix, LAUNCHER)
    manifest = os.path.join(prefix, MANIFEST)
    items: list[tuple[str, bytes, int]] = [
        (launcher, launcher_text(python, package_dir).encode(), 0o755),
        (os.path.join(prefix, HOOK_JSON), hook_json(launcher).encode(), 0o644),
        (os.path.join(prefix, HOOK_JSON_ANNOTATION), annotation_hook_json(launcher).encode(), 0o644),
        (runtime, runtime_text(python, package_dir, launcher, runc).encode(), 0o755),
    ]
    man = man_source()
    if man is not None:
        with open(man, "rb") as f:
            items.append((os.path.join(prefix, MAN_PAGE), f.read(), 0o644))
    else:
        print("skipped the man page: no built man/oci-systemd-hook.1 next to the package")

    old_files: list[str] = []
    old_dirs: list[str] = []
    if os.path.isfile(_staged(destdir, manifest)):
        old_files, old_dirs = read_manifest(_staged(destdir, manifest))
    created: list[str] = []
    if destdir:
        os.makedirs(os.path.abspath(destdir), exist_ok=True)
    try:
        for path, data, mode in items:
            _makedirs(destdir, os.path.dirname(path), created)
            changed = _write_atomic(_staged(destdir, path), data, mode)
            print(f"{'installed' if changed else 'unchanged'} {_staged(destdir, path)}")
        _makedirs(destdir, os.path.dirname(manifest), created)
        files = [p for p, _, _ in items] + [p for p in old_files if os.path.lexists(_staged(destdir, p))]
        dirs = created + [d for d in old_dirs if os.path.isdir(_staged(destdir, d))]
        _write_atomic(_staged(destdir, manifest), _manifest_text(files, dirs).encode(), 0o644)
    except OSError as exc:
        raise HookError(f"install failed: {exc.filename or ''}: {exc.strerror}") from None
    print(f"wrote the list of installed files to {_staged(destdir, manifest)}")
    print(f"the launcher runs {python} with the package in {package_dir}")
    if os.path.dirname(os.path.join(prefix, HOOK_JSON)) not in HOOKS_DIRS:
        print(f"note: podman and CRI-O read hooks from {' and '.join(HOOKS_DIRS)}; use "
              f"--hooks-dir {os.path.dirname(os.path.join(prefix, HOOK_JSON))} or copy the JSON file there")
    print(f"{runtime} runs {runc or 'the first runc on PATH (or $OCI_SYSTEMD_RUNTIME_RUNC)'} for Docker and "
          "containerd")
    if docker_config is not None:
        docker_add_runtime(docker_config, runtime)
    log.debug(f"installed under prefix {prefix} (destdir {destdir or 'none'})")
    return EXIT_OK


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _read_docker_config(path: str) -> dict[str, object]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); left it as it was") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} must hold a JSON object; left it as it was")
    runtimes = config.get("runtimes", {})
    if not isinstance(runtimes, dict):
        raise InputError(f"{path}: \"runtimes\" must be an object; left it as it was")
    return config


def _write_docker_config(path: str, config: dict[str, object]) -> None:
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    try:
        _write_atomic(path, (json.dumps(config, indent=2) + "\n").encode(), mode)
    except OSError as exc:
        raise HookError(f"cannot write {path}: {exc.strerror}") from None


_RELOAD_HINT = "reload dockerd to apply it: systemctl reload docker, or kill -HUP $(pidof dockerd)"


def docker_add_runtime(path: str, runtime: str) -> None:
    """Merge `"runtimes": {"oci-systemd": {"path": RUNTIME}}` into Docker's daemon.json."""
    config = _read_docker_config(path)
    runtimes = config.setdefault("runtimes", {})
    assert isinstance(runtimes, dict)
    entry = {"path": runtime}
    if runtimes.get(DOCKER_RUNTIME_NAME) == entry:
        print(f"unchanged {path}: it has the runtime {DOCKER_RUNTIME_NAME} already")
        return
    if DOCKER_RUNTIME_NAME in runtimes:
        print(f"replacing the runtime {DOCKER_RUNTIME_NAME} in {path}: it was {runtimes[DOCKER_RUNTIME_NAME]!r}")
    runtimes[DOCKER_RUNTIME_NAME] = entry
    _write_docker_config(path, config)
    print(f"added the runtime {DOCKER_RUNTIME_NAME} ({runtime}) to {path}; {_RELOAD_HINT}")
    print(f"run systemd containers with: docker run --runtime {DOCKER_RUNTIME_NAME} --stop-signal RTMIN+3 IMAGE "
          "/sbin/init")


def docker_remove_runtime(path: str, runtime: str) -> None:
    """Remove exactly the entry `docker_add_runtime` wrote (the name and our path), nothing else."""
    if not os.path.exists(path):
        print(f"nothing to remove from {path}: it does not exist")
        return
    config = _read_docker_config(path)
    runtimes = config.get("runtimes")
    if not isinstance(runtimes, dict) or DOCKER_RUNTIME_NAME not in runtimes:
        print(f"nothing to remove from {path}: no runtime {DOCKER_RUNTIME_NAME}")
        return
    if runtimes[DOCKER_RUNTIME_NAME] != {"path": runtime}:
        print(f"kept the runtime {DOCKER_RUNTIME_NAME} in {path}: it is {runtimes[DOCKER_RUNTIME_NAME]!r}, not "
              "what install wrote")
        return
    del runtimes[DOCKER_RUNTIME_NAME]
    if not runtimes:
        del config["runtimes"]
    _write_docker_config(path, config)
    print(f"removed the runtime {DOCKER_RUNTIME_NAME} from {path}; {_RELOAD_HINT}")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def uninstall(destdir: str, prefix: str, log: Log, docker_config: str | None = None) -> int:
    prefix = _check_prefix(prefix)
    if docker_config is not None:
        docker_remove_runtime(docker_config, os.path.join(prefix, RUNTIME))
    manifest = os.path.join(prefix, MANIFEST)
    staged_manifest = _staged(destdir, manifest)
    if not os.path.isfile(staged_manifest):
        print(f"nothing to uninstall: no {staged_manifest}")
        return EXIT_OK
    files, dirs = read_manifest(staged_manifest)
    # Files are below the prefix; a directory may also be one of its parents, made for a fresh --destdir.
    for path in files + [d for d in dirs if not _under(prefix, d)]:
        if not _under(path, prefix):
            raise InputError(f"{staged_manifest}: {path} is outside the prefix {prefix}; refusing to remove it")
    for path in sorted(set(files)):
        staged = _staged(destdir, path)
        if os.path.isdir(staged) and not os.path.islink(staged):
            print(f"kept {staged}: it is a directory now")
            continue
        try:
            os.unlink(staged)
            print(f"removed {staged}")
        except FileNotFoundError:
            print(f"already gone {staged}")
    os.unlink(staged_manifest)
    print(f"removed {staged_manifest}")
    for path in sorted(set(dirs), key=lambda d: (-d.count("/"), d)):
        staged = _staged(destdir, path)
        try:
            os.rmdir(staged)
            print(f"removed directory {staged}")
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise HookError(f"cannot remove {staged}: {exc.strerror}") from None
    log.debug(f"uninstalled from prefix {prefix}")
    return EXIT_OK


# --- validate ------------------------------------------------------------------------------
