"""Help formatting shared by the `hub` and `site_node` command lines: every option shows its default."""

from __future__ import annotations

import argparse


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" where there is a meaningful default: not for required options, flags or None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "(default" in text or action.required or default is None or default is False or default is argparse.SUPPRESS:
            return text
        if not action.option_strings:  # positionals have no default worth showing
            return text
        return f"{text} (default: %(default)s)"


def use_defaults_formatter(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give `parser` and every subcommand parser below it the defaults-showing formatter."""
    for p in walk(parser):
        p.formatter_class = DefaultsFormatter
    return parser


def walk(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every subcommand parser below it, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                found.extend(walk(child))
    return found
