"""Whether the hook acts on a container at all.

This runs for every container when the hook is wired into a runtime globally,
so it must stay cheap: it only looks at the parsed config.
"""

from __future__ import annotations

from oci_systemd_hook.settings import ENABLE_ANNOTATION, parse_bool
from oci_systemd_hook.spec import Spec

INIT_NAMES = ("init", "systemd")
DISABLE_ENV = "oci-systemd-hook"


def decide(spec: Spec, annotations: dict[str, str]) -> tuple[bool, str]:
    """Return (act, why). Turning the hook off always wins over turning it on."""
    for key, value in spec.env.items():
        if key.lower() == DISABLE_ENV and value.strip().lower() == "disabled":
            return False, f"process.env has {key}={value}"
    merged = dict(spec.annotations)
    merged.update(annotations)
    if ENABLE_ANNOTATION in merged:
        enabled = parse_bool(merged[ENABLE_ANNOTATION], f"annotation {ENABLE_ANNOTATION}")
        return enabled, f"annotation {ENABLE_ANNOTATION}={merged[ENABLE_ANNOTATION]}"
    if not spec.args:
        return False, "process.args is empty"
    command = spec.args[0]
    if command == "/dev/init":
        return False, "the command is the runtime's /dev/init, not systemd"
    name = command.rstrip("/").rsplit("/", 1)[-1]
    if name in INIT_NAMES:
        return True, f"the command {command} is an init"
    return False, f"the command {command[:200]} is not init or systemd"
