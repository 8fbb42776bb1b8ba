"""config.json: what the hook reads from the bundle, normalised, and every way it can be wrong."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from oci_systemd_hook import jsonlite
from oci_systemd_hook.errors import InputError
from oci_systemd_hook.spec import MAX_CONFIG_BYTES, clean_container_path, load_spec, parse_spec

BUNDLE = "/var/lib/bundles/c1"


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {"args": ["/sbin/init"], "env": ["PATH=/usr/bin:/bin", "container=podman"]},
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
    }
    base.update(overrides)
    return base


def write_bundle(tmp_path: Path, obj: object) -> str:
    (tmp_path / "config.json").write_text(jsonlite.dumps(obj))
    return str(tmp_path)


def test_typical_config() -> None:
    spec = parse_spec(config(), BUNDLE)
    assert spec.args == ["/sbin/init"]
    assert spec.env == {"PATH": "/usr/bin:/bin", "container": "podman"}
    assert spec.env_get("container") == "podman"
    assert spec.env_get("nope") is None
    assert spec.root == BUNDLE + "/rootfs"
    assert spec.readonly is False
    assert [(m.destination, m.type, m.source, m.options) for m in spec.mounts] == [
        ("/proc", "proc", "proc", []), ("/dev", "tmpfs", "tmpfs", ["nosuid", "mode=755"])]
    assert spec.namespaces == {"pid", "mount"}
    assert spec.uid_mappings == [] and spec.gid_mappings == []
    assert spec.host_id_of_root("uid") is None and spec.host_id_of_root("gid") is None
    assert spec.mount_label == ""
    assert spec.memory_limit is None
    assert spec.annotations == {}
    assert spec.mount_destinations() == {"/proc", "/dev"}


@pytest.mark.parametrize(
    ("root", "expected"),
    [("rootfs", BUNDLE + "/rootfs"), ("./rootfs/", BUNDLE + "/rootfs"),
     ("../shared/rootfs", "/var/lib/bundles/shared/rootfs"),
     ("/srv/images/deb", "/srv/images/deb"), ("/srv//images/./deb/", "/srv/images/deb")],
)
def test_root_path(root: str, expected: str) -> None:
    assert parse_spec(config(root={"path": root}), BUNDLE).root == expected


def test_readonly_root() -> None:
    assert parse_spec(config(root={"path": "r", "readonly": True}), BUNDLE).readonly is True


@pytest.mark.parametrize(
    ("path", "clean"),
    [("/run", "/run"), ("//run/", "/run"), ("/run/../run", "/run"), ("run", "/run"), ("/run/./lock//", "/run/lock"),
     ("/../../etc", "/etc"), ("/", "/"), ("", "/"), ("/a/b/../../..", "/"), ("/var/log/journal/", "/var/log/journal")],
)
def test_clean_container_path(path: str, clean: str) -> None:
    assert clean_container_path(path) == clean


def test_mount_destinations_are_normalised() -> None:
    mounts = [{"destination": "//run/"}, {"destination": "/run/../tmp", "type": "tmpfs"},
              {"destination": "sys/fs/cgroup", "type": "cgroup", "options": ["ro"]}]
    spec = parse_spec(config(mounts=mounts), BUNDLE)
    assert [m.destination for m in spec.mounts] == ["/run", "/tmp", "/sys/fs/cgroup"]
    assert spec.mount_destinations() == {"/run", "/tmp", "/sys/fs/cgroup"}


def test_mount_at_returns_the_last_one() -> None:
    mounts = [{"destination": "/run", "type": "bind"}, {"destination": "/run/", "type": "tmpfs"}]
    spec = parse_spec(config(mounts=mounts), BUNDLE)
    m = spec.mount_at("/run")
    assert m is not None and m.type == "tmpfs"
    assert spec.mount_at("/tmp") is None


def test_mount_null_fields_default() -> None:
    spec = parse_spec(config(mounts=[{"destination": "/x", "type": None, "source": None, "options": None}]), BUNDLE)
    assert [(m.type, m.source, m.options) for m in spec.mounts] == [("", "", [])]


def test_env_parsing() -> None:
    env = ["A=1", "B=x=y", "EMPTY=", "NOEQUALS", "A=2", "=weird"]
    spec = parse_spec(config(process={"args": ["/sbin/init"], "env": env}), BUNDLE)
    assert spec.env == {"A": "2", "B": "x=y", "EMPTY": "", "": "weird"}


def test_process_missing_gives_empty_args() -> None:
    obj = config()
    del obj["process"]
    spec = parse_spec(obj, BUNDLE)
    assert spec.args == [] and spec.env == {}


def test_uid_gid_mappings() -> None:
    linux = {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
             "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 1},
                             {"containerID": 1, "hostID": 300001, "size": 100}]}
    spec = parse_spec(config(linux=linux), BUNDLE)
    assert [(m.container_id, m.host_id, m.size) for m in spec.uid_mappings] == [(0, 100000, 65536)]
    assert [(m.container_id, m.host_id, m.size) for m in spec.gid_mappings] == [(0, 200000, 1), (1, 300001, 100)]
    assert spec.host_id_of_root("uid") == 100000
    assert spec.host_id_of_root("gid") == 200000


def test_host_id_of_root_when_root_is_not_the_first_mapping() -> None:
    linux = {"uidMappings": [{"containerID": 1, "hostID": 5001, "size": 10},
                             {"containerID": 0, "hostID": 7000, "size": 1}]}
    spec = parse_spec(config(linux=linux), BUNDLE)
    assert spec.host_id_of_root("uid") == 7000
    assert spec.host_id_of_root("gid") is None


def test_host_id_of_root_unmapped() -> None:
    linux = {"uidMappings": [{"containerID": 1, "hostID": 5001, "size": 10},
                             {"containerID": 0, "hostID": 9, "size": 0}]}
    assert parse_spec(config(linux=linux), BUNDLE).host_id_of_root("uid") is None


def test_namespaces_and_mount_label() -> None:
    linux = {"namespaces": [{"type": "cgroup"}, {"type": "user", "path": "/proc/1/ns/user"}, {"type": "mount"}],
             "mountLabel": "system_u:object_r:container_file_t:s0:c1,c2"}
    spec = parse_spec(config(linux=linux), BUNDLE)
    assert spec.namespaces == {"cgroup", "user", "mount"}
    assert spec.mount_label == "system_u:object_r:container_file_t:s0:c1,c2"


@pytest.mark.parametrize(("limit", "expected"), [(536870912, 536870912), (-1, None), (0, None), (None, None)])
def test_memory_limit(limit: int | None, expected: int | None) -> None:
    spec = parse_spec(config(linux={"resources": {"memory": {"limit": limit}}}), BUNDLE)
    assert spec.memory_limit == expected


def test_annotations() -> None:
    spec = parse_spec(config(annotations={"oci-systemd-hook.enable": "true", "x": ""}), BUNDLE)
    assert spec.annotations == {"oci-systemd-hook.enable": "true", "x": ""}


@pytest.mark.parametrize(
    ("obj", "fragments"),
    [
        ([], ("must hold a JSON object", "an array")),
        ("x", ("must hold a JSON object", "a string")),
        (config(root=...), ('"root" is missing',)),
        (config(root="rootfs"), ('"root" must be an object', "a string")),
        (config(root={}), ('"root.path"', "is missing")),
        (config(root={"path": ""}), ('"root.path"', "non-empty")),
        (config(root={"path": 5}), ('"root.path" must be a non-empty path', "an integer")),
        (config(root={"path": "a\0b"}), ('"root.path"',)),
        (config(root={"path": "r", "readonly": "yes"}), ('"root.readonly" must be a boolean', "a string")),
        (config(process=[]), ('"process" must be an object', "an array")),
        (config(process={"args": "/sbin/init"}), ('"process.args" must be an array of strings',)),
        (config(process={"args": ["/sbin/init", 1]}), ('"process.args[1]" must be a string',)),
        (config(process={"args": [], "env": "A=1"}), ('"process.env" must be an array of strings',)),
        (config(process={"args": [], "env": [None]}), ('"process.env[0]"',)),
        (config(mounts={}), ('"mounts" must be an array', "an object")),
        (config(mounts=["/run"]), ('"mounts[0]" must be an object',)),
        (config(mounts=[{"destination": "/a"}, {"type": "tmpfs"}]), ('"mounts[1].destination"', "is missing")),
        (config(mounts=[{"destination": ""}]), ('"mounts[0].destination"',)),
        (config(mounts=[{"destination": 3}]), ('"mounts[0].destination"',)),
        (config(mounts=[{"destination": "/a", "type": 1}]), ('"mounts[0].type" must be a string',)),
        (config(mounts=[{"destination": "/a", "source": []}]), ('"mounts[0].source" must be a string',)),
        (config(mounts=[{"destination": "/a"}, {"destination": "/b", "options": "ro"}]),
         ('"mounts[1].options" must be an array of strings',)),
        (config(linux=[]), ('"linux" must be an object',)),
        (config(linux={"uidMappings": {}}), ('"linux.uidMappings" must be an array',)),
        (config(linux={"uidMappings": [1]}), ('"linux.uidMappings[0]" must be an object',)),
        (config(linux={"gidMappings": [{"containerID": 0, "hostID": 1}]}),
         ('"linux.gidMappings[0].size"', "is missing")),
        (config(linux={"uidMappings": [{"containerID": 0, "hostID": -1, "size": 1}]}),
         ('"linux.uidMappings[0].hostID"', "non-negative")),
        (config(linux={"uidMappings": [{"containerID": 0, "hostID": "1", "size": 1}]}),
         ('"linux.uidMappings[0].hostID" must be a non-negative integer', "a string")),
        (config(linux={"uidMappings": [{"containerID": True, "hostID": 1, "size": 1}]}),
         ('"linux.uidMappings[0].containerID" must be a non-negative integer, got a boolean',)),
        (config(linux={"mountLabel": 1}), ('"linux.mountLabel" must be a string',)),
        (config(linux={"namespaces": [{"type": "pid"}, {}]}), ('"linux.namespaces[1].type" is missing',)),
        (config(linux={"namespaces": ["pid"]}), ('"linux.namespaces[0]" must be an object',)),
        (config(linux={"resources": []}), ('"linux.resources" must be an object',)),
        (config(linux={"resources": {"memory": 5}}), ('"linux.resources.memory" must be an object',)),
        (config(linux={"resources": {"memory": {"limit": "1g"}}}),
         ('"linux.resources.memory.limit" must be an integer',)),
        (config(linux={"resources": {"memory": {"limit": 1.5}}}), ('"linux.resources.memory.limit"',)),
        (config(annotations=[]), ('"annotations" must be an object',)),
        (config(annotations={"a": 1}), ('"annotations.a" must be a string',)),
    ],
    ids=repr,
)
def test_errors_name_the_field(obj: Any, fragments: tuple[str, ...]) -> None:
    if isinstance(obj, dict) and obj.get("root", None) is ...:
        del obj["root"]
    with pytest.raises(InputError) as info:
        parse_spec(obj, BUNDLE)
    assert info.value.code == 2
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message


def test_load_spec_reads_the_bundle(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, config(annotations={"a": "b"}))
    spec = load_spec(bundle)
    assert spec.root == str(tmp_path / "rootfs")
    assert spec.args == ["/sbin/init"]
    assert spec.annotations == {"a": "b"}


def test_load_spec_large_valid_file(tmp_path: Path) -> None:
    env = [f"V{i}={'x' * 100}" for i in range(20000)]  # ~2 MiB, read in several chunks
    bundle = write_bundle(tmp_path, config(process={"args": ["/sbin/init"], "env": env}))
    assert os.path.getsize(tmp_path / "config.json") > 2 << 20
    assert len(load_spec(bundle).env) == 20000


def expect_load_error(bundle: str, *fragments: str) -> None:
    with pytest.raises(InputError) as info:
        load_spec(bundle)
    assert info.value.code == 2
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message


def test_missing_config(tmp_path: Path) -> None:
    expect_load_error(str(tmp_path), "cannot open", "config.json", "No such file or directory")


def test_missing_bundle(tmp_path: Path) -> None:
    expect_load_error(str(tmp_path / "gone"), "cannot open", "No such file")


def test_config_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()
    expect_load_error(str(tmp_path), "config.json is not a regular file")


def test_config_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config.json")
    expect_load_error(str(tmp_path), "config.json is not a regular file")


def test_config_is_a_device(tmp_path: Path) -> None:
    (tmp_path / "config.json").symlink_to("/dev/null")
    expect_load_error(str(tmp_path), "not a regular file")


def test_config_is_a_symlink_to_a_regular_file(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text(jsonlite.dumps(config()))
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").symlink_to(real)
    assert load_spec(str(bundle)).args == ["/sbin/init"]


def test_config_too_large(tmp_path: Path) -> None:
    with open(tmp_path / "config.json", "wb") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)  # sparse: no 16 MiB written
    expect_load_error(str(tmp_path), "larger than 16 MiB")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_config_unreadable(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    p.write_text("{}")
    p.chmod(0)
    expect_load_error(str(tmp_path), "cannot open", "Permission denied")
    p.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.parametrize(("content", "fragment"), [
    (b"", "empty input"), (b"{", "not valid JSON"), (b"{} x", "extra data"), (b'{"a": NaN}', "NaN"),
    (b'{"\xff": 1}', "not UTF-8"),
])
def test_config_not_json(tmp_path: Path, content: bytes, fragment: str) -> None:
    (tmp_path / "config.json").write_bytes(content)
    expect_load_error(str(tmp_path), "config.json is not valid JSON", fragment)


def test_config_json_not_an_object(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1, 2]")
    expect_load_error(str(tmp_path), "config.json must hold a JSON object, got an array")


def test_root_path_that_cannot_be_encoded_is_an_input_error() -> None:
    obj = jsonlite.loads('{"process": {"args": ["/sbin/init"]}, "root": {"path": "/srv/\\ud800"}}')
    with pytest.raises(InputError, match=r'"root\.path"'):
        parse_spec(obj, BUNDLE)
