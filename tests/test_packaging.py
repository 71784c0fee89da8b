"""The Debian package's sources: man pages and completion agree with the argument
parsers, the maintainer scripts parse, and packaging/build-deb builds a package with
the expected contents whose vendored libraries import.

The build test downloads the pinned wheels once (PyPI) into the build's wheel cache.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from ccgroupd import __version__, main
from ccgroupd.client import argparser as ctlparser

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
MAINTAINER_SCRIPTS = ("postinst", "prerm", "postrm")
HELP = {"-h", "--help"}


def load_build_deb() -> ModuleType:
    """packaging/build-deb is a script without .py: import it by path."""
    loader = importlib.machinery.SourceFileLoader("build_deb", str(PACKAGING / "build-deb"))
    spec = importlib.util.spec_from_loader("build_deb", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_deb"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


build_deb = load_build_deb()


# -- argparse introspection ----------------------------------------------------------


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def subcommands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# -- man pages -------------------------------------------------------------------------


def man_sections(path: Path) -> dict[str, str]:
    """.SH (and, as "SH/SS", .SS) section name -> its troff source."""
    sections: dict[str, str] = {}
    top = sub = ""
    for line in path.read_text().splitlines():
        if line.startswith(".SH "):
            top, sub = line[4:].strip('"'), ""
        elif line.startswith(".SS "):
            sub = line[4:].replace("\\-", "-")
        key = f"{top}/{sub}" if sub else top
        sections[key] = sections.get(key, "") + line + "\n"
    return sections


def tagged_options(troff: str) -> set[str]:
    """The options in .TP tags: the line after each .TP."""
    lines = troff.splitlines()
    tags = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == ".TP"]
    return {option for tag in tags for option in options_in(tag)}


def tagged_words(troff: str) -> set[str]:
    lines = troff.splitlines()
    return {lines[i + 1].split()[1] for i, line in enumerate(lines[:-1])
            if line == ".TP" and lines[i + 1].startswith(".B ")}


def options_in(troff: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", troff.replace("\\-", "-")))


def test_ccgroupd_man_page_matches_the_parser() -> None:
    parser = main.build_parser()
    sections = man_sections(PACKAGING / "man" / "ccgroupd.8")
    assert tagged_options(sections["OPTIONS"]) == options_of(parser)
    assert tagged_words(sections["COMMANDS"]) == set(subcommands_of(parser))


def test_ccgroupctl_man_page_matches_the_parser() -> None:
    parser = ctlparser.build_parser()
    sections = man_sections(PACKAGING / "man" / "ccgroupctl.1")
    assert tagged_options(sections["OPTIONS"]) == options_of(parser)
    commands = subcommands_of(parser)
    documented = {key.split("/", 1)[1] for key in sections if key.startswith("COMMANDS/")}
    assert documented == set(commands)
    for name, subparser in commands.items():
        assert tagged_options(sections[f"COMMANDS/{name}"]) == options_of(subparser) - HELP, name


@pytest.mark.parametrize("page", ["ccgroupd.8", "ccgroupctl.1"])
def test_man_page_names_no_option_that_does_not_exist(page: str) -> None:
    parsers = [main.build_parser(), ctlparser.build_parser()]
    parsers += [sub for parser in parsers for sub in subcommands_of(parser).values()]
    known = set().union(*(options_of(parser) for parser in parsers))
    text = (PACKAGING / "man" / page).read_text()
    # Outside the option lists: journalctl's and systemctl's own options in examples.
    foreign = {"-o", "-u", "-x", "-p"}
    assert options_in(text) - known - foreign == set()


@pytest.mark.parametrize("page", ["ccgroupd.8", "ccgroupctl.1"])
def test_man_page_header_carries_the_version(page: str) -> None:
    header = (PACKAGING / "man" / page).read_text().splitlines()[0]
    assert f'"ccgroupd {__version__}"' in header


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("page", ["ccgroupd.8", "ccgroupctl.1"])
def test_man_page_renders_without_warnings(page: str) -> None:
    result = subprocess.run(["groff", "-man", "-ww", "-z", str(PACKAGING / "man" / page)],
                            capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")


# -- bash completion ---------------------------------------------------------------------

COMPLETIONS = PACKAGING / "completion"
PARSERS = {"ccgroupctl": ctlparser.build_parser, "ccgroupd": main.build_parser}


def completion_lists(command: str) -> tuple[set[str], set[str], dict[str, set[str]]]:
    """(global options, commands, command -> options) as the completion script has them."""
    text = (COMPLETIONS / command).read_text()
    global_options = re.search(r'local global_options="([^"]*)"', text)
    commands = re.search(r'local commands="([^"]*)"', text)
    assert global_options and commands
    per_command: dict[str, set[str]] = {}
    for names, options in re.findall(r'^\s*([a-z| -]+)\) options="([^"]*)"', text, re.M):
        for name in names.split("|"):
            per_command[name.strip()] = set(options.split())
    return set(global_options.group(1).split()), set(commands.group(1).split()), per_command


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_completion_lists_match_the_parser(command: str) -> None:
    parser = PARSERS[command]()
    global_options, commands, per_command = completion_lists(command)
    subcommands = subcommands_of(parser)
    assert global_options == options_of(parser)
    assert commands == set(subcommands)
    assert per_command == {name: options_of(sub) for name, sub in subcommands.items()}


def complete(command: str, *words: str) -> list[str]:
    """Run the completion function for `COMMAND WORDS...` (the last word is being typed).

    bash-completion's helpers are replaced by minimal stand-ins, so this needs only bash.
    """
    script = f"""
        _init_completion() {{
            words=("${{COMP_WORDS[@]}}"); cword=$COMP_CWORD
            cur=${{words[cword]}}; prev=${{words[cword-1]}}
        }}
        _filedir() {{ COMPREPLY=(FILES); }}
        complete() {{ :; }}
        source {COMPLETIONS / command}
        COMP_WORDS=({command} "$@"); COMP_CWORD=$#
        _{command}
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    result = subprocess.run(["bash", "-c", script, "bash", *words],
                            capture_output=True, text=True, check=True)
    return sorted(result.stdout.split())


def test_completion_offers_commands_then_their_options() -> None:
    assert complete("ccgroupctl", "re") == ["reload", "reset", "restart-engine"]
    assert complete("ccgroupctl", "--socket", "/tmp/s", "st") == ["status"]
    assert complete("ccgroupctl", "set", "--mem") == ["--memory", "--memory-high", "--memory-low",
                                                      "--memory-min"]
    assert complete("ccgroupctl", "events", "--f") == ["--follow"]
    assert complete("ccgroupctl", "--socket", "") == ["FILES"]
    assert complete("ccgroupctl", "set", "--cpus", "") == []
    assert complete("ccgroupctl", "set", "--build-memory", "") == []
    assert complete("ccgroupctl", "set", "--run") == ["--running", "--runtime"]
    assert complete("ccgroupctl", "top", "--") == ["--engine", "--help", "--interval", "--json",
                                                   "--once", "--sort"]
    assert complete("ccgroupctl", "top", "--sort", "") == ["cpu", "memory"]
    assert complete("ccgroupctl", "--engine", "ci", "st") == ["status"]
    assert complete("ccgroupctl", "--engine", "") == []
    assert complete("ccgroupctl", "status", "--e") == ["--engine"]
    assert complete("ccgroupctl", "reload", "--e") == []


def test_ccgroupd_completion_offers_commands_and_config_files() -> None:
    assert complete("ccgroupd", "") == ["check", "run"]
    assert complete("ccgroupd", "--config", "") == ["FILES"]
    assert complete("ccgroupd", "--config", "/etc/c.toml", "ch") == ["check"]
    assert complete("ccgroupd", "--c") == ["--config"]


# -- Debian control files ------------------------------------------------------------------


def test_conffiles_are_the_config_file_only() -> None:
    conffiles = (PACKAGING / "debian" / "conffiles").read_text().split()
    assert conffiles == ["/etc/ccgroupd/config.toml"]


@pytest.mark.parametrize("name", MAINTAINER_SCRIPTS)
def test_maintainer_script_is_posix_sh(name: str) -> None:
    path = PACKAGING / "debian" / name
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "set -e" in lines
    subprocess.run(["sh", "-n", str(path)], check=True)


def run_maintainer_script(name: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run a maintainer script with the tools it calls replaced by stand-ins that log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    for tool in ("deb-systemd-helper", "deb-systemd-invoke", "systemctl", "journalctl",
                 "py3compile", "py3clean", "addgroup", "delgroup", "groupdel", "getent"):
        stand_in = bin_dir / tool
        stand_in.write_text(f'#!/bin/sh\necho "{tool} $*" >>{calls}\n')
        stand_in.chmod(0o755)
    result = subprocess.run(["sh", str(PACKAGING / "debian" / name), *args],
                            capture_output=True, text=True, check=False,
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    return result.returncode, calls.read_text() if calls.exists() else ""


@pytest.mark.parametrize(("name", "actions"), [
    ("postinst", ["configure", "abort-upgrade", "abort-remove", "abort-deconfigure"]),
    ("prerm", ["remove", "upgrade", "deconfigure", "failed-upgrade"]),
    ("postrm", ["remove", "purge", "upgrade", "failed-upgrade", "abort-install",
                "abort-upgrade", "disappear"]),
])
def test_maintainer_scripts_take_every_action_of_debian_policy(
        name: str, actions: list[str], tmp_path: Path) -> None:
    for action in actions:
        assert run_maintainer_script(name, tmp_path, action, "0.1.0-1")[0] == 0, action
    assert run_maintainer_script(name, tmp_path, "bogus")[0] == 1


def test_postinst_abort_keeps_the_units_enable_state(tmp_path: Path) -> None:
    _, calls = run_maintainer_script("postinst", tmp_path, "abort-upgrade", "0.1.0-1")
    assert "deb-systemd-helper --quiet was-enabled ccgroupd.service" in calls


def test_purge_keeps_the_ccgroupd_group(tmp_path: Path) -> None:
    code, calls = run_maintainer_script("postrm", tmp_path, "purge")
    assert code == 0
    assert "delgroup" not in calls and "groupdel" not in calls
    assert "deb-systemd-helper purge ccgroupd.service" in calls


def test_sdist_carries_what_its_tests_import(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    (sdist,) = tmp_path.glob("ccgroupd-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    test_modules = {f"tests/{path.name}" for path in (REPO / "tests").glob("*.py")}
    assert {"tests/conftest.py", "tests/fakekernel.py", "LICENSE"} <= names
    assert test_modules <= names


def test_changelog_matches_the_package_version() -> None:
    version, _ = build_deb.changelog_head((PACKAGING / "debian" / "changelog").read_text())
    assert version.rsplit("-", 1)[0] == __version__


# -- build-deb's ABI merge -------------------------------------------------------------------

SO_311 = "pkg/_core.cpython-311-x86_64-linux-gnu.so"
SO_312 = "pkg/_core.cpython-312-x86_64-linux-gnu.so"


def test_merge_keeps_extension_modules_side_by_side_and_unions_record() -> None:
    merged = build_deb.merge_abi_trees({
        "cp311": {"pkg/__init__.py": b"x", SO_311: b"311", "pkg-1.dist-info/RECORD": b"a\nb311\n"},
        "cp312": {"pkg/__init__.py": b"x", SO_312: b"312", "pkg-1.dist-info/RECORD": b"a\nb312\n"},
    })
    assert merged == {"pkg/__init__.py": b"x", SO_311: b"311", SO_312: b"312",
                      "pkg-1.dist-info/RECORD": b"a\nb311\nb312\n"}


def test_merge_keeps_each_abis_sbom() -> None:
    sbom = "pkg-1.dist-info/sboms/pkg.cyclonedx.json"
    merged = build_deb.merge_abi_trees({"cp311": {sbom: b"1"}, "cp312": {sbom: b"2"}})
    assert merged == {"pkg-1.dist-info/sboms/pkg.cyclonedx.cp311.json": b"1",
                      "pkg-1.dist-info/sboms/pkg.cyclonedx.cp312.json": b"2"}


@pytest.mark.parametrize(("cp311", "cp312", "complaint"), [
    ({"pkg/a.py": b"1"}, {"pkg/a.py": b"2"}, "differs between"),
    ({"pkg/a.py": b"1"}, {}, "only in the cp311"),
    ({SO_312: b"312"}, {}, "only in the cp311"),
])
def test_merge_refuses_trees_that_differ(cp311: dict[str, bytes], cp312: dict[str, bytes],
                                         complaint: str) -> None:
    with pytest.raises(build_deb.BuildError, match=complaint):
        build_deb.merge_abi_trees({"cp311": cp311, "cp312": cp312})


def test_vendor_pins_cover_both_pydantic_core_abis() -> None:
    pins = {pin.name: pin for pin in build_deb.read_pins(PACKAGING / "vendor-requirements.txt")}
    assert len(pins["pydantic-core"].sha256) == len(build_deb.SERVED_ABIS)
    assert {"pydantic", "pydantic-settings", "structlog"} <= pins.keys()


# -- the built package ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    output = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, str(PACKAGING / "build-deb"),
                             "--output-dir", str(output)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == output / f"ccgroupd_{__version__}-1_amd64.deb"
    return path


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True,
                          check=True).stdout


def test_package_contents(deb: Path) -> None:
    listing = dpkg_deb("-c", str(deb)).splitlines()
    entries = {line.split()[-1].removeprefix("."): line.split()[:2] for line in listing}
    expected = {
        "/usr/bin/ccgroupd": "-rwxr-xr-x", "/usr/bin/ccgroupctl": "-rwxr-xr-x",
        "/usr/lib/systemd/system/ccgroupd.service": "-rw-r--r--",
        "/usr/lib/systemd/catalog/ccgroupd.catalog": "-rw-r--r--",
        "/etc/ccgroupd/config.toml": "-rw-r--r--",
        "/usr/share/man/man8/ccgroupd.8.gz": "-rw-r--r--",
        "/usr/share/man/man1/ccgroupctl.1.gz": "-rw-r--r--",
        "/usr/share/bash-completion/completions/ccgroupctl": "-rw-r--r--",
        "/usr/share/bash-completion/completions/ccgroupd": "-rw-r--r--",
        "/usr/share/doc/ccgroupd/copyright": "-rw-r--r--",
        "/usr/share/doc/ccgroupd/changelog.Debian.gz": "-rw-r--r--",
        "/usr/share/doc/ccgroupd/deployment.md": "-rw-r--r--",
        "/usr/share/doc/ccgroupd/cloud-init.yaml": "-rw-r--r--",
        "/usr/share/doc/ccgroupd/ansible/roles/ccgroupd/tasks/main.yml": "-rw-r--r--",
        "/usr/lib/ccgroupd/ccgroupd/engine/shim.py": "-rw-r--r--",
        "/usr/lib/ccgroupd/pydantic/__init__.py": "-rw-r--r--",
        "/usr/lib/ccgroupd/pydantic_settings/__init__.py": "-rw-r--r--",
        "/usr/lib/ccgroupd/structlog/__init__.py": "-rw-r--r--",
        "/usr/lib/ccgroupd/pydantic_core/_pydantic_core.cpython-311-x86_64-linux-gnu.so":
            "-rw-r--r--",
        "/usr/lib/ccgroupd/pydantic_core/_pydantic_core.cpython-312-x86_64-linux-gnu.so":
            "-rw-r--r--",
    }
    assert {path: entries.get(path, ["missing"])[0] for path in expected} == expected
    assert {owner for _, owner in entries.values()} == {"root/root"}
    assert not [path for path in entries if "__pycache__" in path or path.endswith(".pyc")]
    # Private, not in python3's public dist-packages (issue 16, item 1).
    assert not [path for path in entries if "/dist-packages/" in path]
    # Only Debian provides these: shipping them too would shadow python3-systemd and
    # python3-prometheus-client.
    assert not [path for path in entries if re.search(r"/(systemd|psutil|prometheus_client)/", path)
                and "/usr/lib/systemd/" not in path]


def test_package_control(deb: Path) -> None:
    fields = dict(line.split(": ", 1) for line in
                  dpkg_deb("-f", str(deb)).splitlines() if ": " in line)
    assert fields["Version"] == f"{__version__}-1"
    assert fields["Architecture"] == "amd64"
    depends = {relation.strip() for relation in fields["Depends"].split(",")}
    assert {"python3-systemd", "python3-prometheus-client", "adduser",
            "python3 (>= 3.11)",
            "python3 (<< 3.13)"} <= depends
    assert not [relation for relation in depends if "psutil" in relation]  # see the README


def test_package_maintainer_scripts_and_conffiles(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True)
    assert (tmp_path / "conffiles").read_text().split() == ["/etc/ccgroupd/config.toml"]
    for name in MAINTAINER_SCRIPTS:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o755
        assert (tmp_path / name).read_text() == (PACKAGING / "debian" / name).read_text()


def interpreter_for(abi: str) -> str | None:
    """A working CPython of that ABI on this machine (cp311 -> python3.11), if any."""
    version = f"{abi[2]}.{abi[3:]}"
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    candidate = shutil.which(f"python{version}")
    if candidate is None:
        return None
    # A version manager's shim may exist without that version being active.
    works = subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False)
    return candidate if works.returncode == 0 else None


@pytest.mark.parametrize("abi", sorted(build_deb.SERVED_ABIS))
def test_vendored_libraries_import(abi: str, deb: Path, tmp_path: Path) -> None:
    """The unpacked tree, with sys.path as the launchers set it (and no site module), runs
    ccgroupd's config code (pydantic validation goes through pydantic-core's compiled
    module of that ABI)."""
    python = interpreter_for(abi)
    if python is None:
        pytest.skip(f"no working Python for {abi} on this machine")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    vendor = tmp_path / "usr/lib/ccgroupd"
    public = tmp_path / "usr/lib/python3/dist-packages"
    code = (f"import sys; sys.path += [{str(vendor)!r}, {str(public)!r}]\n"
            "import pydantic, pydantic_core, ccgroupd.config\n"
            "print(pydantic.__file__, pydantic_core.__file__, ccgroupd.config.__file__)\n"
            "from pathlib import Path\n"
            "ccgroupd.config.load_config(Path(sys.argv[1]))\n")
    result = subprocess.run(
        [python, "-I", "-S", "-B", "-c", code, str(tmp_path / "etc/ccgroupd/config.toml")],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert [Path(path).is_relative_to(tmp_path) for path in result.stdout.split()] == [True] * 3


def test_launcher_names_the_served_versions(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    launcher = (tmp_path / "usr/bin/ccgroupctl").read_text()
    assert launcher.startswith("#!/usr/bin/python3 -IS\n")
    assert "not in ((3, 11), (3, 12)):" in launcher
    assert "from ccgroupd.client.ctl import main" in launcher


# -- fleet rollout examples ------------------------------------------------------------------


def test_cloud_init_config_is_a_valid_ccgroupd_config(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    from ccgroupd.config import load_config

    cloud_config = yaml.safe_load((PACKAGING / "cloud-init.yaml").read_text())
    (entry,) = [f for f in cloud_config["write_files"]
                if f["path"] == "/etc/ccgroupd/config.d/50-cloud-init.toml"]
    assert entry["defer"] is True  # after the package
    assert cloud_config["packages"] == ["ccgroupd"]
    (tmp_path / "config.toml").write_text(entry["content"])
    config = load_config(tmp_path / "config.toml")
    assert config.engine.private_cgroup_namespace is True


def test_ansible_template_renders_a_valid_ccgroupd_config(tmp_path: Path) -> None:
    jinja2 = pytest.importorskip("jinja2")
    yaml = pytest.importorskip("yaml")
    import json

    from ccgroupd.config import load_config

    role = PACKAGING / "ansible" / "roles" / "ccgroupd"
    variables = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    variables |= {"ansible_managed": "Ansible managed", "ccgroupd_admin_group": "dagger-admins",
                  "ccgroupd_engine_environment": {"DAGGER_DEBUG": 1, "HTTPS_PROXY": "http://p:3128"}}
    environment = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    # Ansible's filters that the template uses.
    environment.filters |= {"to_json": json.dumps, "bool": bool}
    rendered = environment.from_string((role / "templates" / "config.toml.j2").read_text())
    (tmp_path / "config.toml").write_text(rendered.render(variables))
    config = load_config(tmp_path / "config.toml")
    assert config.limits.cpus == 4
    assert config.limits.memory_max_bytes == 8 * 1024**3
    assert config.engine.command == variables["ccgroupd_engine_command"]
    assert config.engine.environment == {"DAGGER_DEBUG": "1", "HTTPS_PROXY": "http://p:3128"}
    assert config.api.admin_group == "dagger-admins"


def test_ansible_validates_the_drop_in_with_ccgroupd(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    yaml = pytest.importorskip("yaml")
    tasks = yaml.safe_load(
        (PACKAGING / "ansible" / "roles" / "ccgroupd" / "tasks" / "main.yml").read_text())
    (task,) = [t for t in tasks if "ansible.builtin.template" in t]
    template = task["ansible.builtin.template"]
    assert template["dest"].startswith("/etc/ccgroupd/config.d/")
    # Ansible runs `validate` on the candidate file (%s) before it replaces the old one.
    argv = template["validate"].split()
    assert argv[0] == "ccgroupd"
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[limits]\ncpus = 100000\n")  # more than this host: not the validator's job
    bad.write_text("[limits]\nmemory = 'banana'\n")
    assert main.main([arg.replace("%s", str(good)) for arg in argv[1:]]) == 0
    assert main.main([arg.replace("%s", str(bad)) for arg in argv[1:]]) == 3
    assert "limits.memory = 'banana'" in capsys.readouterr().out


SHELL_SCRIPTS = [*(f"packaging/debian/{name}" for name in MAINTAINER_SCRIPTS),
                 "packaging/completion/ccgroupctl", "packaging/completion/ccgroupd",
                 "packaging/demo", "packaging/demo-guest",
                 "packaging/run-in-guest", "tests/vm/scenarios/50-deb.sh",
                 "tests/vm/scenarios/70-engine-docker.sh",
                 "tests/vm/scenarios/70-engine-runc.sh",
                 "tests/vm/scenarios/80-builds-runc.sh",
                 "tests/vm/scenarios/90-engines.sh",
                 "tests/vm/scenarios/runc-builds/engine.sh"]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_script_passes_shellcheck(script: str) -> None:
    # -x -P SCRIPTDIR: follow the helpers a script sources from its own directory;
    # warning level: SC2317 (info) mistakes functions called through check() for dead code.
    command = ["shellcheck", "-S", "warning", "-x", "-P", "SCRIPTDIR", str(REPO / script)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
