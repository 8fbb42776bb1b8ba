"""Wire the hook into a bundle's config.json the way a user of runc would."""

from __future__ import annotations

import sys
from pathlib import Path

from oci_systemd_hook.installer import launcher_text
from tests.fakecontainer import REPO


def write_launcher(directory: Path, python: str = sys.executable) -> Path:
    """The launcher `oci-systemd-hook install` writes, running this checkout's package."""
    directory.mkdir(parents=True, exist_ok=True)
    launcher = directory / "oci-systemd-hook"
    launcher.write_text(launcher_text(python, str(REPO)))
    launcher.chmod(0o755)
    return launcher


def hooks(launcher: Path, state_dir: Path, journal_root: Path, *extra: str,
          prestart_stage: str = "prestart") -> dict[str, object]:
    """config.json "hooks" running the hook at prestart (or createRuntime) and poststop."""
    args = [f"--state-dir={state_dir}", f"--journal-root={journal_root}", *extra]
    return {
        prestart_stage: [{"path": str(launcher), "args": ["oci-systemd-hook", prestart_stage, *args],
                          "timeout": 30}],
        "poststop": [{"path": str(launcher), "args": ["oci-systemd-hook", "poststop", *args]}],
    }
