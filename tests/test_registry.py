"""The host-side registry: machine-id claims and the private journal store (no container needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oci_systemd_hook import registry
from oci_systemd_hook.errors import HookError
from tests.fakecontainer import needs_root

pytestmark = [needs_root]
MID = "0123456789abcdef0123456789abcdef"


def test_claim_link_and_owner(tmp_path: Path) -> None:
    assert registry.journal_owner(str(tmp_path), MID) is registry.FREE
    assert registry.claim_journal(str(tmp_path), MID, "c1", 0o755, 100000, 100000) is True
    store = tmp_path / ".oci-systemd-hook"
    assert (store.stat().st_uid, store.stat().st_mode & 0o777) == (0, 0o700)
    assert os.readlink(tmp_path / MID) == ".oci-systemd-hook/" + MID
    assert (store / (MID + ".owner")).read_text() == "c1\n"
    data = store / MID
    assert (data.stat().st_uid, data.stat().st_gid, data.stat().st_mode & 0o7777) == (100000, 100000, 0o755)
    assert registry.journal_owner(str(tmp_path), MID) == "c1"
    assert registry.claim_journal(str(tmp_path), MID, "c1", 0o755, None, None) is False, "reused"
    with pytest.raises(HookError, match="belongs to container c1"):
        registry.claim_journal(str(tmp_path), MID, "c2", 0o755, None, None)
    assert registry.remove_journal(str(tmp_path), MID, "c2") is False
    assert data.is_dir()
    assert registry.remove_journal(str(tmp_path), MID, "c1") is True
    assert not data.exists() and not (tmp_path / MID).is_symlink() and not (store / (MID + ".owner")).exists()


@pytest.mark.parametrize("layout", ["dir", "file", "other-link", "dangling-link"])
def test_anything_else_at_the_name_is_not_ours(tmp_path: Path, layout: str) -> None:
    path = tmp_path / MID
    if layout == "dir":
        path.mkdir()
    elif layout == "file":
        path.write_text("x")
    elif layout == "other-link":
        os.symlink("/etc", path)
    else:
        os.symlink(".oci-systemd-hook/" + MID, path)  # looks like ours, but no owner says so
    assert registry.journal_owner(str(tmp_path), MID) == registry.NOT_OURS
    with pytest.raises(HookError):
        registry.claim_journal(str(tmp_path), MID, "c1", 0o755, None, None)
    assert registry.remove_journal(str(tmp_path), MID, "c1") is False
    assert path.is_symlink() or path.exists()


def test_data_without_an_owner_is_never_guessed(tmp_path: Path) -> None:
    store = tmp_path / ".oci-systemd-hook"
    store.mkdir(mode=0o700)
    (store / MID).mkdir()
    assert registry.journal_owner(str(tmp_path), MID) == registry.NOT_OURS
    with pytest.raises(HookError, match="without an owner"):
        registry.claim_journal(str(tmp_path), MID, "c1", 0o755, None, None)


def test_an_interrupted_claim_is_completed_by_its_owner(tmp_path: Path) -> None:
    store = tmp_path / ".oci-systemd-hook"
    store.mkdir(mode=0o700)
    (store / (MID + ".owner")).write_text("c1\n")  # died before making the directory and the link
    assert registry.claim_journal(str(tmp_path), MID, "c1", 0o755, None, None) is True
    assert (tmp_path / MID).is_dir()


@pytest.mark.parametrize("mode", [0o755, 0o701, 0o770])
def test_a_store_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    store = tmp_path / ".oci-systemd-hook"
    store.mkdir()
    store.chmod(mode)
    assert registry.journal_owner(str(tmp_path), MID) == registry.NOT_OURS
    with pytest.raises(HookError, match="mode 0700"):
        registry.claim_journal(str(tmp_path), MID, "c1", 0o755, None, None)


def test_a_store_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(elsewhere, root / ".oci-systemd-hook")
    with pytest.raises(HookError, match="is not a directory"):
        registry.claim_journal(str(root), MID, "c1", 0o755, None, None)
    assert list(elsewhere.iterdir()) == []


def test_machine_id_claims(tmp_path: Path) -> None:
    (tmp_path / "c1").mkdir()
    assert registry.claim_mid(str(tmp_path), MID, "c1") is True
    assert registry.claim_mid(str(tmp_path), MID, "c1") is False
    assert registry.mid_claims(str(tmp_path)) == {MID: "c1"}
    with pytest.raises(HookError, match="held by the live container c1"):
        registry.claim_mid(str(tmp_path), MID, "c2")
    (tmp_path / "c1").rmdir()  # c1 is gone without a poststop: its claim is stale
    assert registry.mid_claims(str(tmp_path)) == {}
    (tmp_path / "c2").mkdir()
    assert registry.claim_mid(str(tmp_path), MID, "c2") is True
    registry.release_mid(str(tmp_path), MID, "c1")  # not c1's any more: nothing happens
    assert registry.mid_claims(str(tmp_path)) == {MID: "c2"}
    registry.release_mid(str(tmp_path), MID, "c2")
    assert not (tmp_path / ".machine-ids").exists()
