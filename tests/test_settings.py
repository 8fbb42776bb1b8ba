"""The hook's knobs: defaults, environment, flags and annotations."""

from __future__ import annotations

import pytest

from oci_systemd_hook.errors import InputError
from oci_systemd_hook.settings import ANNOTATION_KNOBS, KNOBS, Settings, check_size, parse_bool


def test_defaults() -> None:
    s = Settings()
    assert s.as_dict() == {"state-dir": "/run/oci-systemd-hook", "journal-root": "/var/log/journal",
                           "journal": "keep", "run-size": "64m", "tmp-size": "auto", "max-size": "25%",
                           "journal-max-age": "30d", "journal-max-use": "1g", "cgroup-view": "auto",
                           "copy-up": True, "debug": False}
    assert list(s.as_dict()) == list(KNOBS)


def test_env() -> None:
    s = Settings()
    s.apply_env({"OCI_SYSTEMD_HOOK_STATE_DIR": "/srv/state/", "OCI_SYSTEMD_HOOK_JOURNAL_ROOT": "/srv/journal",
                 "OCI_SYSTEMD_HOOK_JOURNAL": "remove", "OCI_SYSTEMD_HOOK_RUN_SIZE": "32M",
                 "OCI_SYSTEMD_HOOK_TMP_SIZE": "25%", "OCI_SYSTEMD_HOOK_DEBUG": "yes", "PATH": "/bin"})
    assert s.as_dict() == {"state-dir": "/srv/state", "journal-root": "/srv/journal", "journal": "remove",
                           "run-size": "32m", "tmp-size": "25%", "max-size": "25%",
                           "journal-max-age": "30d", "journal-max-use": "1g", "cgroup-view": "auto", "copy-up": True,
                           "debug": True}


def test_env_empty_values_are_ignored() -> None:
    s = Settings()
    s.apply_env({"OCI_SYSTEMD_HOOK_STATE_DIR": "", "OCI_SYSTEMD_HOOK_DEBUG": ""})
    assert s.as_dict() == Settings().as_dict()


def test_env_lowercase_or_other_prefix_ignored() -> None:
    s = Settings()
    s.apply_env({"oci_systemd_hook_journal": "off", "SYSTEMD_HOOK_JOURNAL": "off", "OCI_SYSTEMD_HOOK_STATE-DIR": "/x"})
    assert s.as_dict() == Settings().as_dict()


def test_env_error_names_the_variable() -> None:
    with pytest.raises(InputError, match=r"^OCI_SYSTEMD_HOOK_RUN_SIZE: expected a size") as info:
        Settings().apply_env({"OCI_SYSTEMD_HOOK_RUN_SIZE": "lots"})
    assert info.value.code == 2


@pytest.mark.parametrize(("value", "stored"), [("64m", "64m"), ("512k", "512k"), ("1g", "1g"), ("25%", "25%"),
                                               ("1048576", "1048576"), ("64M", "64m"), (" 2G ", "2g"),
                                               ("100%", "100%")])
def test_sizes(value: str, stored: str) -> None:
    s = Settings()
    s.set("run-size", value, "--run-size")
    s.set("tmp-size", value, "--tmp-size")
    assert (s.run_size, s.tmp_size) == (stored, stored)
    assert check_size(value, "x") == stored


@pytest.mark.parametrize("value", ["", "0", "0m", "m", "-1", "1.5g", "64mb", "64t", "auto ", "1 g", "²m", "%",
                                   "9" * 19, "0x10", "+5"])
def test_bad_sizes(value: str) -> None:
    with pytest.raises(InputError) as info:
        Settings().set("run-size", value, "--run-size")
    assert info.value.code == 2
    assert info.value.message.startswith("--run-size: expected a size such as 64m, 512k, 1g or 25%")


@pytest.mark.parametrize("value", ["17179869184g", "8589934592g",
                                   "4503599627370496k", "101%", "100000%"])
def test_sizes_the_kernel_would_wrap_or_that_exceed_ram(value: str) -> None:
    """17179869184g is 2**64 bytes: the kernel wraps it to 0, an unlimited tmpfs."""
    with pytest.raises(InputError, match=r"out of range|more than all of the host's memory") as info:
        Settings().set("run-size", value, "--run-size")
    assert info.value.code == 2


def test_annotation_sizes_are_cut_to_max_size() -> None:
    ram = 8 << 30
    s = Settings()
    s.apply_annotations({"oci-systemd-hook.run-size": "100%", "oci-systemd-hook.tmp-size": "1g"})
    assert s.size("run-size", ram) == f"{ram // 4 // 1024}k"  # the default max-size is 25% of RAM
    assert s.size("tmp-size", ram) == "1g"  # below the maximum: as asked
    s = Settings()
    s.set("max-size", "512m", "--max-size")
    s.apply_annotations({"oci-systemd-hook.tmp-size": "4g"})
    assert s.size("tmp-size", ram) == "524288k"
    # The host's own choices (flags, environment) are not cut.
    s = Settings()
    s.set("run-size", "100%", "--run-size")
    assert s.size("run-size", ram) == "100%"


def test_max_size_is_not_an_annotation_knob() -> None:
    s = Settings()
    s.apply_annotations({"oci-systemd-hook.max-size": "100%"})
    assert s.max_size == "25%"


def test_auto_only_for_tmp_size() -> None:
    s = Settings()
    s.set("tmp-size", "1g", "--tmp-size")
    s.set("tmp-size", "AUTO", "--tmp-size")
    assert s.tmp_size == "auto"
    with pytest.raises(InputError, match="--run-size: expected a size"):
        s.set("run-size", "auto", "--run-size")
    assert s.run_size == "64m"


@pytest.mark.parametrize(("value", "stored"), [("/srv/x", "/srv/x"), ("/srv/x///", "/srv/x"), ("/", "/"),
                                               ("//", "/")])
def test_paths(value: str, stored: str) -> None:
    s = Settings()
    s.set("state-dir", value, "--state-dir")
    assert s.state_dir == stored


@pytest.mark.parametrize("value", ["relative", "./x", "", "~/x", "/a\0b"])
def test_relative_paths_refused(value: str) -> None:
    with pytest.raises(InputError) as info:
        Settings().set("journal-root", value, "--journal-root")
    assert info.value.message.startswith("--journal-root: expected an absolute path")


@pytest.mark.parametrize("mode", ["keep", "remove", "off"])
def test_journal_modes(mode: str) -> None:
    s = Settings()
    s.set("journal", mode, "--journal")
    assert s.journal == mode


@pytest.mark.parametrize("mode", ["KEEP", "delete", "", "on", " keep"])
def test_bad_journal_modes(mode: str) -> None:
    with pytest.raises(InputError, match=r"^--journal: expected one of keep, remove, off"):
        Settings().set("journal", mode, "--journal")


@pytest.mark.parametrize(("value", "result"), [("1", True), ("On", True), ("enabled", True), ("0", False),
                                               ("No", False), (" off ", False), ("disable", False)])
def test_parse_bool(value: str, result: bool) -> None:
    assert parse_bool(value, "x") is result


@pytest.mark.parametrize("value", ["", "y", "2", "nope"])
def test_parse_bool_errors(value: str) -> None:
    with pytest.raises(InputError, match=r"^where: expected true or false"):
        parse_bool(value, "where")


def test_debug_knob() -> None:
    s = Settings()
    s.set("debug", "true", "--debug")
    assert s.debug is True
    with pytest.raises(InputError, match="--debug: expected true or false"):
        s.set("debug", "loud", "--debug")


def test_annotation_knobs_only_tune_the_container() -> None:
    assert set(ANNOTATION_KNOBS) <= set(KNOBS)
    assert "state-dir" not in ANNOTATION_KNOBS and "journal-root" not in ANNOTATION_KNOBS
    s = Settings()
    s.apply_annotations({"oci-systemd-hook.journal": "remove", "oci-systemd-hook.run-size": "8m",
                         "oci-systemd-hook.tmp-size": "128m", "oci-systemd-hook.debug": "true"})
    assert s.as_dict() == {"state-dir": "/run/oci-systemd-hook", "journal-root": "/var/log/journal",
                           "journal": "remove", "run-size": "8m", "tmp-size": "128m", "max-size": "25%",
                           "journal-max-age": "30d", "journal-max-use": "1g", "cgroup-view": "auto",
                           "copy-up": True, "debug": True}


def test_annotations_cannot_choose_host_paths() -> None:
    s = Settings()
    s.set("state-dir", "/srv/state", "--state-dir")
    s.apply_annotations({"oci-systemd-hook.state-dir": "/etc", "oci-systemd-hook.journal-root": "/etc",
                         "oci-systemd-hook.state_dir": "/etc", "OCI-SYSTEMD-HOOK.STATE-DIR": "/etc"})
    assert s.state_dir == "/srv/state"
    assert s.journal_root == "/var/log/journal"
    # not even validated: a bad value there is no error either
    s.apply_annotations({"oci-systemd-hook.state-dir": "relative"})
    assert s.state_dir == "/srv/state"


def test_bad_annotation_value_names_the_annotation() -> None:
    with pytest.raises(InputError) as info:
        Settings().apply_annotations({"oci-systemd-hook.tmp-size": "huge"})
    assert info.value.message.startswith("annotation oci-systemd-hook.tmp-size: expected a size")
    assert info.value.code == 2


def test_order_env_then_later_sources_win() -> None:
    s = Settings()
    s.apply_env({"OCI_SYSTEMD_HOOK_RUN_SIZE": "10m"})
    s.set("run-size", "20m", "--run-size")
    s.apply_annotations({"oci-systemd-hook.run-size": "30m"})
    assert s.run_size == "30m"


@pytest.mark.parametrize(("value", "stored", "seconds"), [("30d", "30d", 30 * 86400), ("12h", "12h", 43200),
                                                          ("90m", "90m", 5400), ("3600", "3600", 3600),
                                                          ("off", "off", 0), ("0", "off", 0)])
def test_journal_max_age(value: str, stored: str, seconds: int) -> None:
    from oci_systemd_hook.settings import duration_seconds

    s = Settings()
    s.set("journal-max-age", value, "--journal-max-age")
    assert (s.journal_max_age, duration_seconds(s.journal_max_age)) == (stored, seconds)


@pytest.mark.parametrize("value", ["", "30x", "-1d", "1.5d", "d", "9" * 13 + "d"])
def test_bad_journal_max_age(value: str) -> None:
    with pytest.raises(InputError, match="expected a duration"):
        Settings().set("journal-max-age", value, "--journal-max-age")


def test_journal_max_use() -> None:
    s = Settings()
    s.set("journal-max-use", "512m", "--journal-max-use")
    assert s.journal_max_use == "512m"
    s.set("journal-max-use", "off", "--journal-max-use")
    assert s.journal_max_use == "off"
    with pytest.raises(InputError, match="not a share of RAM"):
        s.set("journal-max-use", "10%", "--journal-max-use")


def test_retention_is_not_an_annotation_knob() -> None:
    s = Settings()
    s.apply_annotations({"oci-systemd-hook.journal-max-age": "off", "oci-systemd-hook.journal-max-use": "off"})
    assert (s.journal_max_age, s.journal_max_use) == ("30d", "1g")


def test_cgroup_view_knob() -> None:
    s = Settings()
    s.apply_env({"OCI_SYSTEMD_HOOK_CGROUP_VIEW": "V1"})
    assert s.cgroup_view == "v1"
    s.set("cgroup-view", "unified", "--cgroup-view")
    assert s.cgroup_view == "unified"
    s.apply_annotations({"oci-systemd-hook.cgroup-view": "auto"})
    assert s.cgroup_view == "auto" and "cgroup-view" in s.from_annotations
    with pytest.raises(InputError, match="--cgroup-view: expected one of auto, v1, unified, got 'v2'"):
        s.set("cgroup-view", "v2", "--cgroup-view")
