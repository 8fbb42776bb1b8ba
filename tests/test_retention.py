"""Journal retention at poststop: kept journals of gone containers do not pile up; nothing else
is ever touched (the host's journal, another manager's, a live container's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oci_systemd_hook import registry
from oci_systemd_hook.ids import hashed_machine_id
from tests.fakecontainer import FakeContainer, needs_root

pytestmark = [needs_root, pytest.mark.root]
DAY = 86400


def journal(root: Path, cid: str, days_old: float, megabytes: int = 0) -> str:
    mid = hashed_machine_id(cid)
    registry.claim_journal(str(root), mid, cid, 0o755, None, None)
    data = root / ".oci-systemd-hook" / mid
    if megabytes:
        (data / "system.journal").write_bytes(os.urandom(megabytes << 20))
    when = time.time() - days_old * DAY
    for p in [*data.iterdir(), data]:
        os.utime(p, (when, when), follow_symlinks=False)
    return mid


def poststop(state_root: Path, journal_root: Path, cid: str, *args: str) -> subprocess.CompletedProcess[str]:
    state = {"ociVersion": "1.0.2", "id": cid, "status": "stopped", "bundle": "/nonexistent-bundle"}
    return subprocess.run([sys.executable, "-I", "-m", "oci_systemd_hook", "poststop", f"--state-dir={state_root}",
                           f"--journal-root={journal_root}", *args], input=json.dumps(state), capture_output=True,
                          text=True, timeout=60, env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""}, check=False)


def test_oldest_first_by_age_then_by_use(tmp_path: Path) -> None:
    jr, state = tmp_path / "journal", tmp_path / "state"
    jr.mkdir()
    (state / "live").mkdir(parents=True)
    (state / "current").mkdir()  # the container whose poststop this is
    mids = {cid: journal(jr, cid, days, mb) for cid, days, mb in
            [("gone-old", 40, 1), ("gone-mid", 5, 3), ("gone-new", 0.01, 3), ("live", 50, 1)]}
    foreign = jr / "0123456789abcdef0123456789abcdef"
    foreign.mkdir()
    (foreign / "system.journal").write_bytes(b"x" * 4096)
    os.utime(foreign, (time.time() - 400 * DAY,) * 2)
    res = poststop(state, jr, "current", "--journal-max-age=30d", "--journal-max-use=4m", "--debug")
    assert res.returncode == 0, res.stderr
    left = {cid for cid, mid in mids.items() if registry.journal_owner(str(jr), mid) == cid}
    assert left == {"gone-new", "live"}, res.stderr
    assert "older than the maximum age" in res.stderr and "over the maximum use" in res.stderr
    assert (foreign / "system.journal").read_bytes() == b"x" * 4096, "another manager's journal is never touched"
    for cid in ("gone-old", "gone-mid"):
        assert not (jr / mids[cid]).exists() and not (jr / ".oci-systemd-hook" / mids[cid]).exists()


def test_off_keeps_everything(tmp_path: Path) -> None:
    jr, state = tmp_path / "journal", tmp_path / "state"
    jr.mkdir()
    (state / "current").mkdir(parents=True)
    mid = journal(jr, "gone", 400, 2)
    res = poststop(state, jr, "current", "--journal-max-age=off", "--journal-max-use=off")
    assert res.returncode == 0, res.stderr
    assert registry.journal_owner(str(jr), mid) == "gone"


def test_defaults_remove_a_journal_older_than_30_days(tmp_path: Path) -> None:
    jr, state = tmp_path / "journal", tmp_path / "state"
    jr.mkdir()
    (state / "current").mkdir(parents=True)
    old, recent = journal(jr, "old", 31), journal(jr, "recent", 29)
    assert poststop(state, jr, "current").returncode == 0
    assert registry.journal_owner(str(jr), old) is registry.FREE
    assert registry.journal_owner(str(jr), recent) == "recent"


def test_a_poststop_without_state_applies_no_policy(tmp_path: Path) -> None:
    """A container the hook did nothing for (not a systemd container) costs no scan at all."""
    jr, state = tmp_path / "journal", tmp_path / "state"
    jr.mkdir()
    mid = journal(jr, "gone", 400)
    assert poststop(state, jr, "not-ours").returncode == 0
    assert registry.journal_owner(str(jr), mid) == "gone"


def test_a_real_container_journal_is_kept_then_expires(tmp_path: Path) -> None:
    with FakeContainer(tmp_path / "a") as a:
        assert a.run_hook().returncode == 0
        assert a.poststop().returncode == 0
        mid = a.machine_id()
        assert registry.journal_owner(str(a.journal_root), mid) == a.name, "kept (journal=keep)"
        data = a.journal_root / ".oci-systemd-hook" / mid
        os.utime(data, (time.time() - 60 * DAY,) * 2)
        with FakeContainer(tmp_path / "b") as b:
            b.journal_root = a.journal_root
            b.state_dir = a.state_dir
            assert b.run_hook().returncode == 0
            assert b.poststop().returncode == 0
        assert registry.journal_owner(str(a.journal_root), mid) is registry.FREE, "expired at b's poststop"


def test_a_journal_root_shared_by_two_state_roots(tmp_path: Path) -> None:
    """A container live under another hook's state root (podman's and a runc user's) is live."""
    jr, mine, theirs = tmp_path / "journal", tmp_path / "state-a", tmp_path / "state-b"
    jr.mkdir()
    (mine / "current").mkdir(parents=True)
    (theirs / "elsewhere").mkdir(parents=True)
    mid = hashed_machine_id("elsewhere")
    registry.claim_journal(str(jr), mid, "elsewhere", 0o755, None, None, str(theirs))
    data = jr / ".oci-systemd-hook" / mid
    os.utime(data, (time.time() - 90 * DAY,) * 2)
    assert poststop(mine, jr, "current").returncode == 0
    assert registry.journal_owner(str(jr), mid) == "elsewhere"
    (theirs / "elsewhere").rmdir()  # now it is gone
    (mine / "current").mkdir()
    assert poststop(mine, jr, "current").returncode == 0
    assert registry.journal_owner(str(jr), mid) is registry.FREE
