"""The README and docs/ stay true: their links resolve, every `alexnet ...` command they show parses
(with config keys that exist), every option of every command is documented, and the tests the
reliability page names exist."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from alexnet.cli import build_parser
from alexnet.config import RunConfig, field_rules

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TOP_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
KEYS = {key for key, _, _ in field_rules(RunConfig())}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def links():
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if not re.match(r"[a-z]+:", target):  # not http:, https:, mailto:
                yield page, target


@pytest.mark.parametrize(("page", "target"), list(links()), ids=lambda v: str(v)[-60:])
def test_every_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    where = (page.parent / path).resolve() if path else page
    assert where.exists(), f"{page.name}: {target} does not exist"
    if anchor and where.suffix == ".md":
        assert anchor in anchors(where), f"{page.name}: no heading #{anchor} in {where.name}"


def command_lines(page: Path) -> list[str]:
    """Every `alexnet ...` command shown: in code blocks (continued lines joined, a leading `$ `,
    `time`, environment assignments and `torchrun ... -m` dropped) and in inline code."""
    text = page.read_text()
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^\$ ", "", line.strip())
            line = re.sub(r"^(time |(\w+=\S+ )+)+", "", line)
            line = re.sub(r"^torchrun .*?-m (?=alexnet )", "", line)
            if line.startswith("alexnet "):
                found.append(line.split("#")[0].strip())
    return found


def inline_commands(page: Path) -> list[str]:
    """`alexnet ...` in the prose: a command named with some of its options, not always whole."""
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [m for m in re.findall(r"`(alexnet [^`]+)`", prose) if not re.search(r"\||\.\.\.|…", m)]


COMMANDS = [(page.name, line) for page in PAGES for line in command_lines(page)]
INLINE = [(page.name, line) for page in PAGES for line in inline_commands(page)]


def test_the_pages_show_commands():
    assert len(COMMANDS) > 40


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=lambda v: str(v)[:70])
def test_every_command_shown_parses(page, line, capsys):
    argv = shlex.split(line)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help, --version
            return
        pytest.fail(f"{page}: `{line}` does not parse: {capsys.readouterr().err.strip().splitlines()[-1]}")
    for item in getattr(args, "set", None) or []:
        key = item.partition("=")[0]
        assert key in KEYS, f"{page}: `{line}` sets {key!r}, which is no config key"


@pytest.mark.parametrize(("page", "line"), INLINE, ids=lambda v: str(v)[:70])
def test_every_option_named_in_the_prose_exists(page, line):
    words = shlex.split(line)
    commands = _subcommands()
    if len(words) < 2 or words[1].startswith("-"):
        return  # `alexnet --version`
    assert words[1] in commands, f"{page}: `{line}` names no command"
    options = {o for a in commands[words[1]]._actions for o in a.option_strings}
    for word in words[2:]:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{page}: `{line}`: {words[1]} has no {word}"
    for key in (w.partition("=")[0] for w, prev in zip(words[1:], words, strict=False) if prev == "--set"):
        assert key in KEYS, f"{page}: `{line}` sets {key!r}, which is no config key"


def _subcommands() -> dict:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_of_every_command_is_in_the_commands_page():
    text = (ROOT / "docs" / "commands.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in sub.choices.items():
        if f"## alexnet {name}" not in text:
            missing.append(name)
        for action in command._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help",) and option not in text:
                    missing.append(f"{name} {option}")
    assert missing == []


def test_the_reliability_page_names_tests_that_exist():
    page = (ROOT / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(?:test_[a-z_]+\.py::)?(test_[a-z0-9_]+)(?![a-z0-9_.])", page))
    defined = {
        m
        for f in (ROOT / "tests").glob("test_*.py")
        for m in re.findall(r"^def (test_\w+)", f.read_text(), re.M)
    }
    assert named and named <= defined, sorted(named - defined)


def test_no_history_in_the_readme_and_the_reference_pages():
    for page in TOP_PAGES:
        hits = re.findall(r"(?i)session [0-9]|issue [0-9]|this project's 2-core", page.read_text())
        assert hits == [], page.name
