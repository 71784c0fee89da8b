"""The exec shim as a real subprocess: it joins the group before it execs, and each failing
step exits with its own code and one line on stderr. (Against a plain directory: this host
has no cgroup v2 tree; the guest VM scenarios run it on the real kernel.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ccgroupd.engine.launch import PACKAGE_PARENT, SHIM_BOOTSTRAP
from ccgroupd.engine.shim import EXIT_SHIM_ATTACH, EXIT_SHIM_NOT_FOUND, EXIT_SHIM_USAGE


def shim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The shim started as the daemon starts it (engine_argv)."""
    return subprocess.run([sys.executable, "-I", "-S", "-c", SHIM_BOOTSTRAP, PACKAGE_PARENT,
                           *args], capture_output=True, text=True, timeout=30, check=False,
                          env=env)


def test_shim_joins_the_group_then_execs_the_command(tmp_path: Path) -> None:
    procs = tmp_path / "engine" / "cgroup.procs"
    procs.parent.mkdir()
    procs.write_text("")
    result = shim("--cgroup-root", str(tmp_path), "--group", "engine", "--",
                  sys.executable, "-c", "import os; print(os.getpid())")
    assert result.returncode == 0, result.stderr
    assert procs.read_text() == "0"  # "move me", written by the shim before the exec
    assert result.stdout.strip().isdigit()


def test_shim_with_a_leaf_joins_the_leaf_and_leaves_the_group_empty(tmp_path: Path) -> None:
    group_procs = tmp_path / "engine" / "cgroup.procs"
    leaf_procs = tmp_path / "engine" / "launcher" / "cgroup.procs"
    leaf_procs.parent.mkdir(parents=True)
    group_procs.write_text("")
    leaf_procs.write_text("")
    result = shim("--cgroup-root", str(tmp_path), "--group", "engine", "--leaf", "launcher",
                  "--", "true")
    assert result.returncode == 0, result.stderr
    assert leaf_procs.read_text() == "0"
    assert group_procs.read_text() == ""


def test_shim_that_cannot_join_exits_without_running_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = shim("--cgroup-root", str(tmp_path), "--group", "missing", "--",
                  "touch", str(marker))
    assert result.returncode == EXIT_SHIM_ATTACH
    assert result.stderr.startswith("ccgroupd-shim: cannot join cgroup 'missing'")
    assert result.stderr.count("\n") == 1
    assert not marker.exists()


def test_shim_reports_a_missing_command(tmp_path: Path) -> None:
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "cgroup.procs").write_text("")
    result = shim("--cgroup-root", str(tmp_path), "--group", "engine", "--", "no-such-engine")
    assert result.returncode == EXIT_SHIM_NOT_FOUND
    assert "no-such-engine: command not found" in result.stderr


@pytest.mark.parametrize("args", [
    ["--group", "g"],  # no command
    ["--", "true"],  # no group
    ["--bogus", "--group", "g", "--", "true"],
    ["--group", "g", "--leaf", "a/b", "--", "true"],  # a leaf is one level down
    ["--group", "g", "--leaf"],  # --leaf without its value (and no command)
])
def test_shim_usage_errors(args: list[str]) -> None:
    result = shim(*args)
    assert result.returncode == EXIT_SHIM_USAGE
    assert result.stderr.startswith("ccgroupd-shim: ")


def test_a_planted_package_on_the_engines_pythonpath_does_not_run(tmp_path: Path) -> None:
    # [engine] environment reaches the shim's interpreter: PYTHONPATH=/somewhere with a
    # ccgroupd package in it ran as root in place of the real one (python3 -P -m ...).
    planted = tmp_path / "planted" / "ccgroupd"
    planted.mkdir(parents=True)
    marker = tmp_path / "ran"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    procs = tmp_path / "engine" / "cgroup.procs"
    procs.parent.mkdir()
    procs.write_text("")
    result = shim("--cgroup-root", str(tmp_path), "--group", "engine", "--", "true",
                  env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(planted.parent)})
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert procs.read_text() == "0"  # the real shim ran
