"""scripts/soak: many boot/halt cycles with the hook leave nothing behind (short runs here;
run `scripts/soak` by hand for the 200-cycle default)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.fakecontainer import REPO, needs_root

pytestmark = [needs_root, pytest.mark.root, pytest.mark.realboot]

SOAK = REPO / "scripts" / "soak"
CYCLES = 20


@pytest.mark.parametrize(("cgroup", "journal", "release"), [
    ("v1", "keep", "debian-12"), ("v2", "remove", "debian-12"),
    # systemd 256 and later with the hook's cgroup2 view, on this v1 host and on one without cgroup2
    ("v1", "keep", "debian-sid"), ("legacy", "remove", "debian-sid"),
])
def test_soak_leaves_nothing_behind(cgroup: str, journal: str, release: str) -> None:
    proc = subprocess.run([sys.executable, str(SOAK), "-n", str(CYCLES), "--cgroup", cgroup, "--journal", journal,
                           "--release", release], capture_output=True, text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert len(lines) == 1, proc.stdout
    line = lines[0]
    journals = CYCLES if journal == "keep" else 0
    for part in (f"soak: {CYCLES} cycles, {CYCLES} running, 0 failed,", "mounts unchanged", "0 fds leaked",
                 "0 processes left", "state empty", f"journals {journals} ({journal})", "0 cgroups left",
                 f"cgroup {cgroup}, {release}"):
        assert part in line, line
    m = re.search(r"boot median (\d+\.\d+)s p95 (\d+\.\d+)s", line)
    assert m, line
    assert 0 < float(m.group(1)) <= float(m.group(2)) < 30, line
