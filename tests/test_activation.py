"""Whether the hook acts on a container at all."""

from __future__ import annotations

import pytest

from oci_systemd_hook.activation import decide
from oci_systemd_hook.errors import InputError
from oci_systemd_hook.spec import Spec


def spec(args: list[str], env: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Spec:
    s = Spec()
    s.args = args
    s.env = env or {}
    s.annotations = annotations or {}
    return s


@pytest.mark.parametrize("command", ["/sbin/init", "/usr/lib/systemd/systemd", "init", "systemd",
                                     "/lib/systemd/systemd", "/usr/sbin/init", "./init", "/sbin/init/"])
def test_inits_activate(command: str) -> None:
    act, why = decide(spec([command, "--log-level=debug"]), {})
    assert act is True
    assert command in why and "is an init" in why


@pytest.mark.parametrize("command", ["/dev/init", "/bin/sh", "bash", "/usr/bin/systemd-nspawn", "/sbin/initctl",
                                     "/usr/lib/systemd/systemd-journald", "INIT", "/init.sh", "/sbin/tini", ""])
def test_other_commands_do_not(command: str) -> None:
    act, why = decide(spec([command]), {})
    assert act is False
    assert "not" in why


def test_dev_init_reason() -> None:
    assert decide(spec(["/dev/init", "--", "/sbin/init"]), {}) == (
        False, "the command is the runtime's /dev/init, not systemd")


def test_empty_args() -> None:
    assert decide(spec([]), {}) == (False, "process.args is empty")


@pytest.mark.parametrize(("key", "value"), [("oci-systemd-hook", "disabled"), ("OCI-SYSTEMD-HOOK", "DISABLED"),
                                            ("Oci-Systemd-Hook", "Disabled"), ("oci-systemd-hook", " disabled ")])
def test_env_disabled_turns_off(key: str, value: str) -> None:
    act, why = decide(spec(["/sbin/init"], env={"PATH": "/bin", key: value}), {})
    assert act is False
    assert why == f"process.env has {key}={value}"


@pytest.mark.parametrize("value", ["enabled", "0", "false", "no", ""])
def test_env_other_values_do_not_disable(value: str) -> None:
    assert decide(spec(["/sbin/init"], env={"oci-systemd-hook": value}), {})[0] is True


def test_env_disabled_beats_annotation_on() -> None:
    s = spec(["/sbin/init"], env={"oci-systemd-hook": "disabled"}, annotations={"oci-systemd-hook.enable": "true"})
    assert decide(s, {"oci-systemd-hook.enable": "true"})[0] is False


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on", " enabled "])
def test_annotation_forces_on_for_a_wrapper(value: str) -> None:
    act, why = decide(spec(["/usr/local/bin/start-systemd.sh"]), {"oci-systemd-hook.enable": value})
    assert act is True
    assert why == f"annotation oci-systemd-hook.enable={value}"


def test_annotation_in_config_forces_on() -> None:
    assert decide(spec(["/entrypoint"], annotations={"oci-systemd-hook.enable": "true"}), {})[0] is True


def test_annotation_forces_on_even_without_args() -> None:
    assert decide(spec([]), {"oci-systemd-hook.enable": "true"})[0] is True


@pytest.mark.parametrize("value", ["false", "0", "no", "off", "disabled"])
def test_annotation_forces_off(value: str) -> None:
    act, why = decide(spec(["/sbin/init"]), {"oci-systemd-hook.enable": value})
    assert act is False
    assert "oci-systemd-hook.enable" in why


def test_state_annotation_beats_config_annotation() -> None:
    s = spec(["/sbin/init"], annotations={"oci-systemd-hook.enable": "true"})
    assert decide(s, {"oci-systemd-hook.enable": "false"})[0] is False
    s = spec(["/bin/sh"], annotations={"oci-systemd-hook.enable": "false"})
    assert decide(s, {"oci-systemd-hook.enable": "true"})[0] is True


@pytest.mark.parametrize("value", ["maybe", "", "2", "truee"])
def test_bad_annotation_value(value: str) -> None:
    with pytest.raises(InputError) as info:
        decide(spec(["/sbin/init"]), {"oci-systemd-hook.enable": value})
    assert info.value.code == 2
    assert "annotation oci-systemd-hook.enable" in info.value.message
    assert "expected true or false" in info.value.message


def test_unrelated_annotations_ignored() -> None:
    assert decide(spec(["/bin/sh"]), {"oci-systemd-hook.debug": "true", "io.podman": "x"})[0] is False
