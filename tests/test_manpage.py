"""The man page: generated from its Markdown, renders cleanly, and documents every option and knob."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oci_systemd_hook import cli
from oci_systemd_hook.settings import ANNOTATION_KNOBS, ANNOTATION_PREFIX, ENABLE_ANNOTATION, ENV_PREFIX, KNOBS

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "man" / "oci-systemd-hook.1.md"
PAGE = REPO / "man" / "oci-systemd-hook.1"


@pytest.fixture(scope="module")
def source() -> str:
    return SOURCE.read_text()


@pytest.mark.skipif(shutil.which("go-md2man") is None, reason="go-md2man is not installed")
def test_page_is_up_to_date_with_its_source(tmp_path: Path) -> None:
    out = tmp_path / "page.1"
    subprocess.run(["go-md2man", "-in", str(SOURCE), "-out", str(out)], check=True, timeout=60)
    assert out.read_bytes() == PAGE.read_bytes(), "man/oci-systemd-hook.1 is stale: run `make -C man`"


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
def test_page_renders_without_warnings() -> None:
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    res = subprocess.run(["man", "--warnings", "-l", str(PAGE)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0
    assert res.stderr == ""
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "STAGES", "WHAT IT MOUNTS", "OPTIONS", "ENVIRONMENT",
                    "ANNOTATIONS", "SUBCOMMANDS", "FILES", "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert re.search(rf"^{section}$", res.stdout, re.M), section


def help_options() -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-h)\b", cli.usage()))


def test_help_parsing_finds_the_options() -> None:
    options = help_options()
    assert {"--dry-run", "--json", "--bundle", "--help", "-h", "--version"} <= options
    assert {"--" + name for name in KNOBS} <= options


def test_every_help_option_is_documented(source: str) -> None:
    res = subprocess.run([sys.executable, "-m", "oci_systemd_hook", "--help"], capture_output=True, text=True,
                         timeout=30, cwd=REPO)
    assert res.returncode == 0
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-h)\b", res.stdout))
    assert options >= help_options()
    missing = [opt for opt in sorted(options) if f"**{opt}**" not in source]
    assert missing == []


def test_every_tool_option_is_documented(source: str) -> None:
    for option in ("--destdir", "--prefix", "--python"):
        assert f"**{option}**" in source
    for word in (*cli.TOOLS, "plan"):
        assert f"**{word}**" in source or f"**oci-systemd-hook {word}**" in source


def test_every_environment_variable_is_documented(source: str) -> None:
    names = [ENV_PREFIX + name.replace("-", "_").upper() for name in KNOBS]
    names += ["OCI_SYSTEMD_HOOK_DEBUG", "OCI_SYSTEMD_HOOK_SYSLOG_SOCKET", "stage", "oci-systemd-hook=disabled",
              "container=", "container_uuid="]
    missing = [name for name in names if f"**{name}**" not in source]
    assert missing == []


def test_every_annotation_is_documented(source: str) -> None:
    names = [ENABLE_ANNOTATION] + [ANNOTATION_PREFIX + name for name in ANNOTATION_KNOBS]
    missing = [name for name in names if f"**{name}**" not in source]
    assert missing == []


def test_every_stage_is_documented(source: str) -> None:
    for stage in cli.STAGES:
        assert f"**{stage}**" in source, stage


def test_mount_facts_match_the_plan(source: str) -> None:
    from oci_systemd_hook.plan import MASK_DIR, TMPFS_TARGETS
    from oci_systemd_hook.settings import Settings

    for target in TMPFS_TARGETS:
        assert f"*{target}*\n: tmpfs" in source, target
    assert f"**size={Settings().run_size}**" in source
    assert MASK_DIR in source and "systemd-machine-id-commit.service" in source
    assert Settings().state_dir in source
