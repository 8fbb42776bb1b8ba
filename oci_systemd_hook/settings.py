"""The hook's knobs: defaults, then environment, then hook arguments, then annotations.

Podman's hooks.d runner starts hooks with an empty environment unless the hook's
JSON sets `env`, so every knob is also a command-line flag usable in `args`.
Annotations come from the container's owner, so they may only tune that
container (sizes, its own journal), never choose host paths.
"""

from __future__ import annotations

from oci_systemd_hook.errors import InputError

ENV_PREFIX = "OCI_SYSTEMD_HOOK_"
ANNOTATION_PREFIX = "oci-systemd-hook."
ENABLE_ANNOTATION = ANNOTATION_PREFIX + "enable"
JOURNAL_MODES = ("keep", "remove", "off")
CGROUP_VIEWS = ("auto", "v1", "unified")
_TRUE = ("1", "true", "yes", "on", "enable", "enabled")
_FALSE = ("0", "false", "no", "off", "disable", "disabled")

#: name -> (kind, help); kind is "path", "size", "duration", "journal", "view" or "bool".
KNOBS: dict[str, tuple[str, str]] = {
    "state-dir": ("path", "host directory for per-container state (default /run/oci-systemd-hook)"),
    "journal-root": ("path", "host directory the container's journal is linked under (default /var/log/journal)"),
    "journal": ("journal", "what poststop does with the linked journal: keep (default), remove, or off (no link)"),
    "run-size": ("size", "size of the /run, /run/lock and /var/log/journal tmpfs (default 64m)"),
    "tmp-size": ("size", "size of the /tmp tmpfs; auto (default) is half the memory limit when that is below RAM"),
    "max-size": ("size", "the largest tmpfs size an annotation may ask for; larger ones are cut to it (default 25%)"),
    "journal-max-age": ("duration", "remove kept journals of gone containers not written for this long (default "
                                    "30d; off: never)"),
    "journal-max-use": ("size", "remove the oldest kept journals of gone containers beyond this total (default 1g; "
                                "off: no limit)"),
    "cgroup-view": ("view", "what a container sees at /sys/fs/cgroup on a cgroup v1 host: auto (default: cgroup2 "
                            "for systemd 256 and later, which refuses v1), v1 or unified"),
    "copy-up": ("bool", "copy what the image has in /run, /tmp and /var/log/journal into the hook's new tmpfs "
                        "(default true; false: they start empty)"),
    "debug": ("bool", "log every step to stderr and syslog"),
}
#: Knobs a container may set for itself through annotations.
ANNOTATION_KNOBS = ("journal", "run-size", "tmp-size", "cgroup-view", "copy-up", "debug")


def parse_bool(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InputError(f"{where}: expected true or false, got {value[:40]!r}")


#: The kernel parses tmpfs sizes into 64 bits and wraps silently: 2**64 becomes 0, which
#: means *unlimited*. Anything at or above this is refused instead.
MAX_SIZE_BYTES = 1 << 62
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def check_size(value: str, where: str) -> str:
    """A tmpfs size: bytes with an optional k/m/g suffix, or 1 to 100 percent of RAM."""
    text = value.strip().lower()
    digits = text[:-1] if text[-1:] in ("k", "m", "g", "%") else text
    if not digits.isdigit() or not digits.isascii() or int(digits) == 0 or len(digits) > 18:
        raise InputError(f"{where}: expected a size such as 64m, 512k, 1g or 25%, got {value[:40]!r}")
    if text.endswith("%"):
        if int(digits) > 100:
            raise InputError(f"{where}: {value[:40]!r} is more than all of the host's memory")
    elif int(digits) * _UNITS.get(text[-1:], 1) >= MAX_SIZE_BYTES:
        raise InputError(f"{where}: {value[:40]!r} is out of range (the kernel would wrap it to unlimited)")
    return text


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def check_duration(value: str, where: str) -> str:
    """A duration such as 30d, 12h, 90m or 3600s (or 3600: seconds), or off."""
    text = value.strip().lower()
    if text in ("off", "0"):
        return "off"
    digits = text[:-1] if text[-1:] in _SECONDS else text
    if not digits.isdigit() or not digits.isascii() or len(digits) > 12 or int(digits) == 0:
        raise InputError(f"{where}: expected a duration such as 30d, 12h, 90m or off, got {value[:40]!r}")
    return text


def duration_seconds(text: str) -> int:
    """Seconds of a duration that check_duration accepted; 0 for off."""
    if text == "off":
        return 0
    unit = _SECONDS.get(text[-1:], 1)
    return int(text[:-1] if text[-1:] in _SECONDS else text) * unit


def size_bytes(text: str, ram: int) -> int:
    """Bytes of a size that check_size accepted; a percentage is of `ram`."""
    if text.endswith("%"):
        return ram * int(text[:-1]) // 100
    unit = _UNITS.get(text[-1:], 1)
    return int(text[:-1] if unit > 1 else text) * unit


class Settings:
    """Resolved knobs for one hook run."""

    def __init__(self) -> None:
        self.state_dir = "/run/oci-systemd-hook"
        self.journal_root = "/var/log/journal"
        self.journal = "keep"
        self.run_size = "64m"
        self.tmp_size = "auto"
        self.max_size = "25%"
        self.journal_max_age = "30d"
        self.journal_max_use = "1g"
        self.cgroup_view = "auto"
        self.copy_up = True
        self.debug = False
        #: Knobs whose value came from the container's annotations (untrusted).
        self.from_annotations: set[str] = set()

    def set(self, name: str, value: str, where: str) -> None:
        kind = KNOBS[name][0]
        if kind == "path":
            if not value.startswith("/") or "\0" in value:
                raise InputError(f"{where}: expected an absolute path, got {value[:80]!r}")
            setattr(self, name.replace("-", "_"), value.rstrip("/") or "/")
        elif kind == "duration":
            self.journal_max_age = check_duration(value, where)
        elif kind == "size":
            if name == "tmp-size" and value.strip().lower() == "auto":
                self.tmp_size = "auto"
            elif name == "journal-max-use" and value.strip().lower() in ("off", "0"):
                self.journal_max_use = "off"
            elif name == "journal-max-use" and value.strip().endswith("%"):
                raise InputError(f"{where}: expected a size such as 512m or 2g (not a share of RAM), got "
                                 f"{value[:40]!r}")
            else:
                setattr(self, name.replace("-", "_"), check_size(value, where))
        elif kind == "journal":
            if value not in JOURNAL_MODES:
                raise InputError(f"{where}: expected one of {', '.join(JOURNAL_MODES)}, got {value[:40]!r}")
            self.journal = value
        elif kind == "view":
            if value.strip().lower() not in CGROUP_VIEWS:
                raise InputError(f"{where}: expected one of {', '.join(CGROUP_VIEWS)}, got {value[:40]!r}")
            self.cgroup_view = value.strip().lower()
        else:
            setattr(self, name.replace("-", "_"), parse_bool(value, where))

    def apply_env(self, environ: dict[str, str]) -> None:
        for name in KNOBS:
            var = ENV_PREFIX + name.replace("-", "_").upper()
            if var in environ and environ[var] != "":
                self.set(name, environ[var], var)

    def apply_annotations(self, annotations: dict[str, str]) -> None:
        for name in ANNOTATION_KNOBS:
            key = ANNOTATION_PREFIX + name
            if key in annotations:
                self.set(name, annotations[key], f"annotation {key}")
                self.from_annotations.add(name)

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name.replace("-", "_")) for name in KNOBS}

    def size(self, name: str, ram: int) -> str:
        """The tmpfs size option for knob `name`, cut to max-size when an annotation set it."""
        value: str = getattr(self, name.replace("-", "_"))
        if name not in self.from_annotations or not ram:
            return value
        limit = size_bytes(self.max_size, ram)
        if size_bytes(value, ram) > limit:
            return f"{max(limit // 1024, 1024)}k"
        return value
