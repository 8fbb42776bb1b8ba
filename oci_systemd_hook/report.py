"""Findings and their verdict: what `check` reports about an image or a bundle.

Shared by the image doctor (imagecheck.py) and the bundle doctor (bundlecheck.py): each
finding has a severity, and the worst one decides the exit status.

    error    systemd cannot boot                                     exit 2
    warning  it boots, but something will fail or is missing        exit 1
    info     worth knowing, nothing fails                           exit 0
    ok       a check passed                                         exit 0
"""

from __future__ import annotations

SEVERITIES = ("error", "warning", "info", "ok")
EXIT_BY_SEVERITY = {"error": 2, "warning": 1, "info": 0, "ok": 0}


class Finding:
    """One result: its severity, what was checked, where, and what it means."""

    __slots__ = ("severity", "check", "path", "message")

    def __init__(self, severity: str, check: str, message: str, path: str = "") -> None:
        assert severity in SEVERITIES
        self.severity = severity
        self.check = check
        self.path = path
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "check": self.check, "path": self.path, "message": self.message}


class Report:
    """All findings for one image (or bundle), with the verdict."""

    def __init__(self, rootfs: str, subject: str = "image") -> None:
        self.rootfs = rootfs  # what was checked: an image root or a bundle directory
        self.subject = subject
        self.findings: list[Finding] = []

    def add(self, severity: str, check: str, message: str, path: str = "") -> None:
        self.findings.append(Finding(severity, check, message, path))

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def exit_status(self) -> int:
        return max((EXIT_BY_SEVERITY[f.severity] for f in self.findings), default=0)

    @property
    def verdict(self) -> str:
        return {2: f"systemd cannot boot from this {self.subject}", 1: "systemd boots, with warnings",
                0: f"systemd can boot from this {self.subject}"}[self.exit_status]

    def summary(self) -> dict[str, object]:
        counts: dict[str, object] = {s: self.count(s) for s in SEVERITIES}
        counts["verdict"] = self.verdict
        counts["exit_status"] = self.exit_status
        return counts

    def as_dict(self) -> dict[str, object]:
        return {"rootfs": self.rootfs, "findings": [f.as_dict() for f in self.findings],
                "summary": self.summary()}

    def render(self) -> str:
        lines = [f"{f.severity}: {f.message}" for f in self.findings]
        n = {s: self.count(s) for s in SEVERITIES}
        lines.append(f"{self.rootfs}: {n['error']} error(s), {n['warning']} warning(s), {n['info']} info, "
                     f"{n['ok']} ok: {self.verdict}")
        return "\n".join(lines)


def shown(text: str, limit: int = 120) -> str:
    """Text from the image, safe to print: no control characters, bounded length."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."
