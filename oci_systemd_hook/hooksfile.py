"""`validate`: is a hooks.d file one that podman and CRI-O will use as meant?

Checked against the oci-hooks 1.0.0 JSON schema shipped with the package, plus what the
schema cannot say: regular expressions that compile (in Go's syntax too), and a hook.path
that is an executable file. Runs by hand, so it may use json and re.
"""

from __future__ import annotations

import json
import os
import re

from oci_systemd_hook.errors import InputError
from oci_systemd_hook.schema import HOOKS_SCHEMA, first_problem, load_schema

MAX_HOOK_FILE = 1 << 20
#: Python-only regex syntax that Go's RE2 (podman, CRI-O) rejects: lookarounds, backreferences.
_NOT_RE2 = re.compile(r"\(\?(?:=|!|<=|<!)|(?<!\\)\\[1-9]")


def schema() -> dict[str, object]:
    return load_schema(HOOKS_SCHEMA)


def validate(path: str, root: str = "/") -> None:
    """Raise InputError naming the first bad field if `path` is not a valid oci-hooks 1.0.0 file.

    Also refused: a hook.path (below `root`) that is missing or not executable, which podman
    and CRI-O drop silently (the container then exits 255 with no hint), and the legacy 0.1.0
    format, named as such.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_HOOK_FILE + 1)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    if len(raw) > MAX_HOOK_FILE:
        raise InputError(f"{path}: larger than {MAX_HOOK_FILE} bytes; not a hook file")
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if isinstance(document, dict) and "version" not in document and (
            isinstance(document.get("hook"), str) or "stage" in document or "cmds" in document):
        raise InputError(f"{path}: the legacy 0.1.0 hooks format (\"hook\" a path, \"stage\", \"cmds\"): "
                         "write version 1.0.0 (oci-hooks(5)); `oci-systemd-hook install` does")
    problem = first_problem(document, HOOKS_SCHEMA, quoted=False)
    if problem:
        raise InputError(f"{path}: {problem}")
    hook_path = document["hook"]["path"]
    on_disk = os.path.join(root, hook_path.lstrip("/"))
    if not os.path.isfile(on_disk):
        raise InputError(f"{path}: hook.path: {hook_path} does not exist (podman and CRI-O drop the file without a "
                         "word; the container then exits 255)")
    if not os.access(on_disk, os.X_OK):
        raise InputError(f"{path}: hook.path: {hook_path} is not executable")
    when = document["when"]
    for i, regex in enumerate(when.get("commands", [])):
        _compile(path, f"when.commands[{i}]", regex)
    for key, regex in when.get("annotations", {}).items():
        _compile(path, f"when.annotations[{json.dumps(key)}] (key)", key)
        _compile(path, f"when.annotations[{json.dumps(key)}]", regex)


def _compile(path: str, field: str, regex: str) -> None:
    try:
        re.compile(regex)
    except re.error as exc:
        raise InputError(f"{path}: {field}: {json.dumps(regex)} is not a valid regular expression: {exc}") from None
    if _NOT_RE2.search(regex):
        raise InputError(f"{path}: {field}: {json.dumps(regex)} uses a lookaround or a backreference, which the "
                         "Go regexp syntax of podman and CRI-O does not support")
