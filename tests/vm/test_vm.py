"""Real-kernel scenarios (tests/vm/scenarios), run in a qemu guest booted once per session.

The session builds the Debian package (packaging/build-deb) and boots the guest once with
tests/vm/run-in-vm, which runs tests/vm/run-scenarios for the scenarios this session
selected; each scenario is then one test that passes iff it exited 0 in the guest.
CCGROUPD_VM=0 skips them. Without qemu or mmdebstrap they are skipped too, except under
CI=true, where that is a failure: CI must prove them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

VM_DIR = Path(__file__).resolve().parent
BUILD_DEB = VM_DIR.parent.parent / "packaging" / "build-deb"
SCENARIO_DIR = Path(os.environ.get("CCGROUPD_VM_SCENARIO_DIR", VM_DIR / "scenarios"))
REQUIRED_TOOLS = ("qemu-system-x86_64", "mmdebstrap")
LOG_TAIL_LINES = 60
RUN_DIR_LINE = "run-in-vm: run directory: "

pytestmark = pytest.mark.vm


def scenario_names() -> list[str]:
    return sorted(
        path.name for path in SCENARIO_DIR.iterdir() if path.is_file() and os.access(path, os.X_OK)
    )


@dataclass(frozen=True)
class GuestRun:
    run_dir: Path | None  # None: run-in-vm failed before it made one
    exit_code: int
    log: str  # run-in-vm's stdout and stderr

    def log_tail(self) -> str:
        return "".join(self.log.splitlines(keepends=True)[-LOG_TAIL_LINES:])

    def result_path(self, scenario: str) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "out/results" / f"{scenario}.json"


def selected_scenarios(session: pytest.Session) -> list[str]:
    """The scenarios whose tests this session runs, so that `-k` also shortens the boot."""
    return [
        str(item.callspec.params["scenario"])
        for item in session.items
        if isinstance(item, pytest.Function) and item.originalname == "test_scenario"
    ]


def build_deb(output_dir: Path) -> None:
    """The project's Debian package, for the scenarios that install it ($CCGROUPD_DEBS)."""
    built = subprocess.run([str(BUILD_DEB), "--output-dir", str(output_dir)],
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        pytest.fail(f"packaging/build-deb failed ({built.returncode}):\n{built.stderr}",
                    pytrace=False)


@pytest.fixture(scope="session")
def guest_run(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    if os.environ.get("CCGROUPD_VM") == "0":
        pytest.skip("CCGROUPD_VM=0: real-kernel VM scenarios skipped on request")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        reason = (f"the real-kernel VM scenarios need {' and '.join(missing)}: apt-get install "
                  "qemu-system-x86 qemu-utils mmdebstrap e2fsprogs (or CCGROUPD_VM=0 to skip)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)

    env = dict(os.environ)
    if BUILD_DEB.exists():
        debs = tmp_path_factory.mktemp("debs")
        build_deb(debs)
        env["CCGROUPD_VM_DEBS"] = str(debs)
    command = [str(VM_DIR / "run-in-vm"), str(VM_DIR / "run-scenarios"),
               *selected_scenarios(request.session)]
    # The boot takes minutes: show its progress live, past pytest's output capture.
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = []
    run_dir = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith(RUN_DIR_LINE):
                run_dir = Path(line.removeprefix(RUN_DIR_LINE).strip())
            if reporter is not None and capture is not None:
                with capture.global_and_fixture_disabled():
                    reporter.write_line(f"vm| {line.rstrip()}")
    return GuestRun(run_dir=run_dir, exit_code=process.returncode, log="".join(lines))


@pytest.mark.parametrize("scenario", scenario_names())
def test_scenario(guest_run: GuestRun, scenario: str) -> None:
    result_path = guest_run.result_path(scenario)
    if result_path is None or not result_path.exists():
        pytest.fail(f"{scenario} did not run in the guest (run-in-vm exited "
                    f"{guest_run.exit_code}):\n{guest_run.log_tail()}", pytrace=False)
    result = json.loads(result_path.read_text())
    if result["leftover_cgroups"]:
        warnings.warn(f"{scenario} left cgroups behind: {', '.join(result['leftover_cgroups'])}",
                      stacklevel=1)
    if result["exit_code"] != 0:
        exit_code = result["exit_code"]
        outcome = ("timed out" if result["timed_out"]
                   else f"was killed by signal {-exit_code}" if exit_code < 0
                   else f"exited {exit_code}")
        pytest.fail(f"{scenario} {outcome} after {result['duration_s']:.1f} s in the guest "
                    f"(journal: {guest_run.run_dir}/out/journal.txt); its output:\n"
                    f"{result['output']}", pytrace=False)
