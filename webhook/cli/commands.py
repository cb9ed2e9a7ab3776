"""Each subcommand's parser: a line for the list, what it does, and examples to copy."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = "examples:\n"


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrap to the terminal; examples keep their lines, to be copied whole."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLES):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def command(
    commands: Any,
    name: str,
    *,
    help: str,
    description: str,
    examples: list[str],
    usage: str = "%(prog)s [flags]",
) -> argparse.ArgumentParser:
    """A subcommand whose usage line is short (its flags are listed below it, in groups)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        usage=usage,
        help=help,
        description=description,
        epilog=EXAMPLES + "".join(f"  {line}\n" for line in examples),
        formatter_class=_Formatter,
    )
    return parser
