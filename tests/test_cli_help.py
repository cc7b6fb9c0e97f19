"""Every option of the `hub` and `site_node` command lines says what it is and shows its default."""

from __future__ import annotations

import argparse

import pytest

from hub.cli import build_parser as hub_parser
from protocols.cli_help import walk
from site_node.cli import build_parser as site_parser

PARSERS = {"hub": hub_parser, "site_node": site_parser}


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]


@pytest.mark.parametrize("program", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_default(program: str) -> None:
    parsers = walk(PARSERS[program]())
    assert len(parsers) > 5, "the walk found the subcommands"
    missing, no_default = [], []
    for parser in parsers:
        help_text = " ".join(parser.format_help().split())
        for action in _options(parser):
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                missing.append(name)
            shown = action.default is not None and action.default is not False and not action.required
            if action.option_strings and shown and f"(default: {action.default}" not in help_text:
                if "(default" not in (action.help or ""):  # or the help says it in words
                    no_default.append(name)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose default is not shown: {no_default}"


@pytest.mark.parametrize(
    ("argv", "choices"),
    [
        (["ingest", "--help"], "{cholec80,cholect50,endoscapes,coco,csv}"),
        (["init", "--help"], "{auto,manual}"),
    ],
)
def test_choices_are_listed(argv: list[str], choices: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        site_parser().parse_args(argv)
    assert choices in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["synth", "--site", "a", "--out", "x"], ["model", "make-tiny", "x"], ["model", "hash", "x"]]
)
def test_commands_without_a_home_do_not_take_one(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    site_parser().parse_args(argv)  # parses without it
    with pytest.raises(SystemExit):
        site_parser().parse_args([*argv, "--home", "somewhere"])
    assert "unrecognized arguments: --home" in capsys.readouterr().err


def test_sites_add_says_the_key_is_a_file() -> None:
    add = next(p for p in walk(hub_parser()) if p.prog.endswith("sites add"))
    assert "a file path, not the key text" in " ".join(add.format_help().split())
