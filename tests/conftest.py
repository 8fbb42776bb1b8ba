"""Shared pytest set-up: the repository on sys.path, and no test ever talks to the real syslog."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ["OCI_SYSTEMD_HOOK_SYSLOG_SOCKET"] = ""
