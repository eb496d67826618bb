"""The README's commands exist as it says: the documentation cannot drift from the code (issue 19).

Every `manage.py NAME` the README names answers `--help` with exit status 0,
every option the README names for it appears in that help, and every
`make TARGET` it names is a Makefile target. The options of a row of the
commands table belong to that row's command unless the span names another
(`manage.py rqworker edge:<FOG_EDGE_ID> --worker-class ...`).
"""

import re
from collections import defaultdict

import pytest

from tests.conftest import ROOT, run_manage

README = (ROOT / "README.md").read_text()
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
SPAN = re.compile(r"`([^`\n]+)`")


def documented_commands():
    """{command: {options}} from the commands table and from every `manage.py ...` span."""
    commands = defaultdict(set)
    table = README.split("## The commands", 1)[1].split("\n#", 1)[0]
    # A row of a subcommand (`manage.py bench admin`) is checked against that subcommand's --help.
    for row in re.findall(r"^\| `manage\.py ([a-z_]+(?: [a-z][a-z0-9]*)?)[^`]*` \|(.*)\|\s*$", table, re.MULTILINE):
        name, text = row
        commands[name]
        for span in SPAN.findall(text):
            if not span.startswith("manage.py "):
                commands[name].update(OPTION.findall(span))
    for span in SPAN.findall(README):
        if span.startswith("manage.py "):
            words = span.split()
            commands[words[1]].update(OPTION.findall(span))
    return commands


COMMANDS = documented_commands()


def test_it_found_the_commands_table():
    assert {"runsimulation", "runedge", "runcloud", "reconcile", "bench"} <= set(COMMANDS)
    assert "--skip-bad-lines" in COMMANDS["runsimulation"] and "--worker-class" in COMMANDS["rqworker"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_it_has_every_option_the_readme_names(command):
    result = run_manage(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    missing = sorted(option for option in COMMANDS[command] if not re.search(rf"{option}(?![\w-])", result.stdout))
    assert missing == [], f"README names {missing} for manage.py {command}, its --help does not"


def test_it_has_every_make_target_the_readme_names():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    named = {span.split()[1] for span in SPAN.findall(README) if re.match(r"make [a-z]", span)}
    assert {"demo", "test"} <= named
    assert named - targets == set()
