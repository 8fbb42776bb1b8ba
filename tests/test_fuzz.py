"""Property tests with hypothesis: the parsers, in-root path resolution and machine ids.

- parse_state / parse_spec / load_spec on arbitrary JSON values and arbitrary bytes either
  return or raise InputError, never another exception type.
- Root(rootfs).resolve / open_dir(create=True) / open_file(create=True) on random trees of
  directories, files and symlinks (absolute, `..`, dangling, chained, looping, aimed at a
  canary directory outside the rootfs): an error, or a descriptor whose real path is the
  rootfs or below it; nothing outside the rootfs is created or changed; no fd leaks.
- machine_id_for: a valid machine id for any id.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from oci_systemd_hook.errors import InputError
from oci_systemd_hook.ids import is_machine_id, machine_id_for
from oci_systemd_hook.ocistate import State, parse_state, read_state
from oci_systemd_hook.rootfs import Root
from oci_systemd_hook.spec import Spec, load_spec, parse_spec

FUZZ = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

# --- JSON values -------------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)


def near(keys: dict[str, st.SearchStrategy[object]]) -> st.SearchStrategy[dict[str, object]]:
    """Objects with the real field names, each present or not, holding a plausible or arbitrary value."""
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, json_values) for k, v in keys.items()})


state_like = near({
    "ociVersion": st.just("1.0.2"),
    "id": st.one_of(st.from_regex(r"[A-Za-z0-9_.+-]{1,40}", fullmatch=True), st.text(max_size=300)),
    "pid": st.integers(min_value=-2, max_value=1 << 23),
    "bundle": st.one_of(st.just("/tmp/bundle"), st.text(max_size=30).map(lambda s: "/" + s)),
    "bundlePath": st.just("/tmp/bundle"),
    "status": st.sampled_from(["creating", "created", "running", "stopped"]),
    "annotations": st.dictionaries(st.text(max_size=30), st.one_of(st.text(max_size=10), json_values),
                                   max_size=3),
})

mount_like = near({"destination": st.text(max_size=20), "type": st.sampled_from(["tmpfs", "bind", ""]),
                   "source": st.text(max_size=10), "options": st.lists(st.text(max_size=6), max_size=3)})
idmap_like = near({"containerID": st.integers(-1, 70000), "hostID": st.integers(-1, 1 << 32),
                   "size": st.integers(-1, 70000)})
spec_like = near({
    "process": near({"args": st.lists(st.sampled_from(["/sbin/init", "/bin/sh", "systemd", ""]), max_size=3),
                     "env": st.lists(st.text(max_size=20), max_size=4)}),
    "root": near({"path": st.text(max_size=20), "readonly": st.booleans()}),
    "mounts": st.lists(mount_like, max_size=3),
    "linux": near({"uidMappings": st.lists(idmap_like, max_size=2), "gidMappings": st.lists(idmap_like, max_size=2),
                   "mountLabel": st.text(max_size=10),
                   "namespaces": st.lists(near({"type": st.sampled_from(["mount", "cgroup", "user"])}), max_size=3),
                   "resources": near({"memory": near({"limit": st.integers(-1, 1 << 40)})})}),
    "annotations": st.dictionaries(st.text(max_size=30), st.one_of(st.text(max_size=10), json_values), max_size=3),
})


def _dump(value: object) -> bytes:
    """As a runtime writes it: ASCII JSON (non-ASCII and lone surrogates as \\u escapes)."""
    return json.dumps(value).encode()


def _check_state(raw: bytes | str) -> None:
    try:
        s = parse_state(raw)
    except InputError as exc:
        assert exc.code == 2 and exc.message and "\n" not in exc.message
        return
    assert isinstance(s, State)
    assert isinstance(s.id, str) and s.id and isinstance(s.bundle, str) and s.bundle.startswith("/")
    assert s.pid is None or (isinstance(s.pid, int) and not isinstance(s.pid, bool) and s.pid > 0)
    assert isinstance(s.annotations, dict) and all(isinstance(v, str) for v in s.annotations.values())


def _check_spec(value: object) -> None:
    try:
        spec = parse_spec(value, "/tmp/bundle")
    except InputError as exc:
        assert exc.code == 2 and exc.message and "\n" not in exc.message
        return
    assert isinstance(spec, Spec)
    assert spec.root.startswith("/") and all(isinstance(a, str) for a in spec.args)
    assert all(m.destination.startswith("/") for m in spec.mounts)


@FUZZ
@given(st.one_of(json_values, state_like))
def test_parse_state_json_values(value: object) -> None:
    _check_state(_dump(value))
    _check_state(json.dumps(value))


@FUZZ
@given(st.binary(max_size=200))
def test_parse_state_bytes(raw: bytes) -> None:
    _check_state(raw)
    try:
        read_state(io.BytesIO(raw))
    except InputError:
        pass


@FUZZ
@given(state_like, st.binary(max_size=8), st.integers(0, 200))
def test_parse_state_mangled(value: dict[str, object], junk: bytes, at: int) -> None:
    """A plausible state with bytes inserted or the text cut short."""
    raw = _dump(value)
    _check_state(raw[:at] + junk + raw[at:])
    _check_state(raw[:at])


@FUZZ
@given(st.one_of(json_values, spec_like))
def test_parse_spec_json_values(value: object) -> None:
    _check_spec(value)


@FEW
@given(st.one_of(st.binary(max_size=200), spec_like.map(_dump)))
def test_load_spec_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as bundle:
        Path(bundle, "config.json").write_bytes(raw)
        try:
            load_spec(bundle)
        except InputError:
            pass


BROKEN = [b'{"id": "abc", "pid": 1', b'{"id": "abc', b'{"id" "abc"}', b'{"id": "a\tb"}', b'{"a": 1,}',
          b'["a" "b"]', b'{"id": "\\x"}']


@pytest.mark.parametrize("raw", BROKEN)
def test_parse_state_without_json_decoder(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook never imports `json`; pytest and hypothesis do, which hides this in-process."""
    monkeypatch.delitem(sys.modules, "json.decoder")
    with pytest.raises(InputError):
        parse_state(raw)


@pytest.mark.parametrize("raw", BROKEN)
def test_parse_state_broken_with_json_decoder(raw: bytes) -> None:
    with pytest.raises(InputError, match="not valid JSON"):
        parse_state(raw)


# --- resolution inside the root ----------------------------------------------------------------------

NAMES = ["a", "b", "c", "run", "etc"]
COMPONENTS = [*NAMES, "..", ".", "", "missing", "l1", "l2", "loop"]


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def rel_paths(max_parts: int = 5) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(COMPONENTS), min_size=0, max_size=max_parts).map("/".join)


@st.composite
def link_targets(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["abs", "rel", "canary", "climb", "self", "proc"]))
    path = draw(rel_paths(4))
    if kind == "abs":
        return "/" + path
    if kind == "canary":
        return "{canary}/" + path  # filled in with the canary's absolute host path
    if kind == "climb":
        return "../" * draw(st.integers(1, 12)) + "{canary_rel}/" + path
    if kind == "self":
        return draw(st.sampled_from([".", "..", "l1", "l2", "loop", "loop/x"]))
    if kind == "proc":
        return draw(st.sampled_from(["/proc/self/root", "/proc/self/cwd", "/proc/1/root/etc", "/dev/null"]))
    return path or "."


entries = st.lists(st.tuples(rel_paths(3).filter(bool), st.sampled_from(["dir", "file", "link", "fifo"]),
                             link_targets()), max_size=12)


def _build(rootfs: Path, canary: Path, plan: list[tuple[str, str, str]]) -> None:
    for path, kind, target in plan:
        p = Path(os.path.normpath(rootfs / path))
        if p != rootfs and rootfs not in p.parents:
            continue  # building the tree itself must stay inside
        ancestors = [q for q in reversed(p.parents) if q == rootfs or rootfs in q.parents]  # shallowest first
        if os.path.lexists(p) or any(q.is_symlink() for q in ancestors) or not p.parent.is_dir():
            continue  # never through a link (it may point at the canary, or /proc/1/root), never onto a FIFO
        try:
            if kind == "dir":
                p.mkdir()
            elif kind == "file":
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW))
            elif kind == "fifo":
                os.mkfifo(p)
            else:
                os.symlink(target.format(canary=canary, canary_rel=str(canary).lstrip("/")), p)
        except OSError:
            pass


def _snapshot(path: Path) -> dict[str, tuple[int, int, bytes]]:
    snap = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            data = os.readlink(p).encode() if os.path.islink(p) else b""
            snap[p] = (st_.st_mode, st_.st_size, data)
    return snap


def _inside(fd: int, rootfs: str) -> bool:
    real = os.readlink(f"/proc/self/fd/{fd}")
    return real == rootfs or real.startswith(rootfs + "/")


@FEW
@given(entries, st.lists(st.tuples(st.sampled_from(["resolve", "open_dir", "open_file"]), rel_paths(6)),
                         min_size=1, max_size=6))
def test_resolution_stays_inside_the_root(plan: list[tuple[str, str, str]], calls: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        rootfs, canary = top / "rootfs", top / "canary"
        rootfs.mkdir()
        for d in (canary / "a" / "b", canary / "run", canary / "etc"):
            d.mkdir(parents=True)
        (canary / "a" / "file").write_text("canary")
        os.symlink(str(rootfs), canary / "back-in")  # a link from outside back into the root
        _build(rootfs, canary, plan)
        outside_before = {k: v for k, v in _snapshot(top).items() if not k.startswith(str(rootfs) + "/")}
        fds_before = _fds()
        with Root(str(rootfs)) as root:
            for how, path in calls:
                for p in (path, "/" + path):
                    try:
                        if how == "resolve":
                            fd = root.resolve(p)
                        elif how == "open_dir":
                            fd = root.open_dir(p, create=True)
                        else:
                            fd = root.open_file(p, create=True)
                    except (InputError, OSError) as exc:
                        event(f"{how}: {type(exc).__name__}")
                        continue
                    event(f"{how}: ok")
                    try:
                        assert _inside(fd, str(rootfs)), (how, p, os.readlink(f"/proc/self/fd/{fd}"))
                    finally:
                        os.close(fd)
        assert _fds() == fds_before, "a descriptor leaked"
        outside_after = {k: v for k, v in _snapshot(top).items() if not k.startswith(str(rootfs) + "/")}
        assert outside_after == outside_before, "something outside the rootfs was created or changed"


def test_resolution_escapes_are_clamped(tmp_path: Path) -> None:
    """The examples the property is about, spelled out: links aimed outside resolve inside."""
    rootfs, canary = tmp_path / "rootfs", tmp_path / "canary"
    rootfs.mkdir()
    canary.mkdir()
    os.symlink(str(canary), rootfs / "abs")
    os.symlink("../" * 10 + str(canary).lstrip("/"), rootfs / "climb")
    os.symlink("loop", rootfs / "loop")
    os.symlink(str(canary / "new"), rootfs / "dangling")
    with Root(str(rootfs)) as root:
        # Dangling (inside the root): never created through, as directories.
        for path in ("abs", "climb", "abs/x", "loop"):
            with pytest.raises(InputError):
                root.open_dir(path, create=True)
        # Once the link's target exists inside the root, it is what they resolve to.
        clamped = rootfs / str(canary).lstrip("/")
        clamped.mkdir(parents=True)
        for path in ("abs", "climb", "/abs/x/y", "climb/x/../y"):
            fd = root.open_dir(path, create=True)
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
                assert real.startswith(str(clamped)), real
            finally:
                os.close(fd)
        # A dangling file link is created at its target, clamped inside the root.
        fd = root.open_file("dangling", create=True)
        try:
            assert os.readlink(f"/proc/self/fd/{fd}") == str(clamped / "new")
        finally:
            os.close(fd)
    assert list(canary.iterdir()) == []


# --- machine ids --------------------------------------------------------------------------------------

MACHINE_ID = re.compile(r"[0-9a-f]{32}")


@FUZZ
@given(st.one_of(st.text(), st.from_regex(r"[0-9a-fA-F]{28,70}", fullmatch=True)),
       st.one_of(st.none(), st.text(max_size=40), st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper())))
def test_machine_id_for_is_always_valid(cid: str, container_uuid: str | None) -> None:
    mid = machine_id_for(cid, container_uuid)
    assert MACHINE_ID.fullmatch(mid) and is_machine_id(mid), mid
    assert mid != "0" * 32
    assert machine_id_for(cid, container_uuid) == mid  # stable across calls
    if not container_uuid:
        assert machine_id_for(cid) == mid


@FUZZ
@given(st.text(min_size=1))
def test_machine_id_for_distinct_ids_mostly_differ(cid: str) -> None:
    assert machine_id_for(cid) != machine_id_for(cid + "x") or len(cid) >= 32


def test_machine_id_for_lone_surrogate() -> None:
    assert is_machine_id(machine_id_for("abc\ud800"))
