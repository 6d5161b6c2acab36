"""The command line builds only the parser of the command being run; it must parse exactly as the
full parser does, and know every command."""

from __future__ import annotations

import argparse

import pytest

from mlbuild import cli


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_commands_lists_every_command_of_the_full_parser() -> None:
    assert list(cli.COMMANDS) == _commands(cli.build_parser())


@pytest.mark.parametrize("argv", [
    ["realize", "yolox-coco128-offline", "-q", "--mirror", "m1", "--mirror", "m2", "--scenario", "Server"],
    ["realize", "a", "b", "--set", "min_duration_ms=1000", "--check", "-j", "1"],
    ["lock", "--update", "coco128", "--offline"],
    ["store", "verify", "--repair"],
    ["mirror", "export", "t", "DIR", "--platform", "aarch64-linux"],
    ["key", "generate", "--out", "k"],
    ["results", "show", "abc", "--json"],
    ["reproduce", "r.json", "--lock", "l", "--json"],
    ["diff", "a", "b"],
])
def test_the_one_command_parser_parses_as_the_full_one(argv: list[str]) -> None:
    full = vars(cli.build_parser().parse_args(argv))
    only = vars(cli.build_parser(argv[0]).parse_args(argv))
    assert only == full


def test_an_unknown_command_still_gets_the_full_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["relaize", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'relaize'" in err and "realize" in err
