"""The documents that restate facts of the code say what the code does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ccgroupd import main
from ccgroupd.client import argparser as ctlparser
from ccgroupd.errors import EXIT_CODES_BY_COMMAND, EXIT_CODES_NOT_RESTARTED, EXIT_MEANINGS
from ccgroupd.events import EVENTS

REPO = Path(__file__).resolve().parent.parent
RENDER_DOCS = REPO / "packaging" / "render-docs"
UNIT = (REPO / "systemd" / "ccgroupd.service").read_text()


def test_rendered_regions_match_the_code() -> None:
    result = subprocess.run([sys.executable, str(RENDER_DOCS), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_check_notices_a_stale_region(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    (copy / "packaging" / "man").mkdir(parents=True)
    (copy / "systemd").mkdir()
    (copy / "packaging" / "render-docs").write_text(RENDER_DOCS.read_text())
    for name in ["README.md", "packaging/README.md", "packaging/man/ccgroupd.8",
                 "packaging/man/ccgroupctl.1", "systemd/ccgroupd.service"]:
        (copy / name).write_text((REPO / name).read_text())
    man = copy / "packaging" / "man" / "ccgroupd.8"
    man.write_text(man.read_text().replace(".B 7\n", ".B 8\n"))
    unit = copy / "systemd" / "ccgroupd.service"
    unit.write_text(unit.read_text().replace("RestartPreventExitStatus=", "#"))
    result = subprocess.run([sys.executable, str(copy / "packaging" / "render-docs"), "--check"],
                            capture_output=True, text=True, check=False,
                            env={"PYTHONPATH": str(REPO)})
    assert result.returncode == 1
    assert "packaging/man/ccgroupd.8" in result.stderr
    # The unit's line is found by its key: a commented-out one is not rendered back.
    assert "systemd/ccgroupd.service" not in result.stderr


def man_exit_codes(page: str) -> list[int]:
    text = (REPO / "packaging" / "man" / page).read_text()
    section = text.split('.SH "EXIT STATUS"', 1)[1].split(".SH", 1)[0]
    return [int(code) for code in re.findall(r"^\.B (\d+)$", section, re.MULTILINE)]


@pytest.mark.parametrize(("page", "command"), [("ccgroupd.8", "ccgroupd"),
                                               ("ccgroupctl.1", "ccgroupctl")])
def test_man_pages_list_every_exit_code_of_their_command(page: str, command: str) -> None:
    assert man_exit_codes(page) == list(EXIT_CODES_BY_COMMAND[command])


def test_the_unit_prevents_restarts_after_exactly_the_documented_codes() -> None:
    line = re.search(r"^RestartPreventExitStatus=(.*)$", UNIT, re.MULTILINE)
    assert line is not None
    assert [int(code) for code in line[1].split()] == list(EXIT_CODES_NOT_RESTARTED)
    assert set(EXIT_CODES_NOT_RESTARTED) <= set(EXIT_CODES_BY_COMMAND["ccgroupd"])


def test_the_unit_points_at_both_man_pages() -> None:
    documentation = " ".join(re.findall(r"^Documentation=(.*)$", UNIT, re.MULTILINE)).split()
    assert {"man:ccgroupd(8)", "man:ccgroupctl(1)"} <= set(documentation)


def test_every_exit_code_has_a_meaning_and_a_command() -> None:
    used = {code for codes in EXIT_CODES_BY_COMMAND.values() for code in codes}
    assert used == set(EXIT_MEANINGS)


def test_ccgroupd_help_lists_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main.main(["--help"])
    listed = re.findall(r"^  (\d+)  ", capsys.readouterr().out, re.MULTILINE)
    assert [int(code) for code in listed] == list(EXIT_CODES_BY_COMMAND["ccgroupd"])


def test_ccgroupctl_help_lists_its_exit_codes() -> None:
    listed = re.findall(r"^  (\d+)  ", ctlparser.EPILOG, re.MULTILINE)
    assert [int(code) for code in listed] == list(EXIT_CODES_BY_COMMAND["ccgroupctl"])


def test_man_page_names_every_event() -> None:
    text = (REPO / "packaging" / "man" / "ccgroupd.8").read_text()
    listed = text.split("The event: ", 1)[1].split(".\n", 1)[0]
    assert [name.strip() for name in listed.replace("\n", " ").split(",")] == list(EVENTS)
