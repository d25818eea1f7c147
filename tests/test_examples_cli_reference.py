"""docs/cli.md stays the CLI's own help: regenerate it with

    .venv/bin/python tests/test_examples_cli_reference.py

The part between the GENERATED markers is every command's ``--help`` as click renders it at a
fixed width; the rest of the page (completion, colour, environment) is written by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from hexdbt.cli import main

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED: tests/test_examples_cli_reference.py; do not edit by hand -->"
END = "<!-- END GENERATED -->"
WIDTH = 100


def _commands(
    command: click.Command, parent: click.Context | None, name: str
) -> Iterator[tuple[str, click.Command, click.Context]]:
    # make_context applies the command's context_settings (-h as well as --help).
    context = command.make_context(
        name,
        [],
        parent=parent,
        resilient_parsing=True,
        terminal_width=WIDTH,
        max_content_width=WIDTH,
    )
    yield context.command_path, command, context
    if isinstance(command, click.Group):
        for sub_name in sorted(command.commands):
            yield from _commands(command.commands[sub_name], context, sub_name)


def generated_reference() -> str:
    sections: list[str] = []
    for path, command, context in _commands(main, None, "hexdbt"):
        level = "#" * min(2 + path.count(" "), 4)
        summary = command.get_short_help_str(limit=WIDTH)
        sections.append(
            f"{level} `{path}`\n\n{summary}\n\n```text\n{command.get_help(context)}\n```\n"
        )
    return "\n".join(sections)


def replace_generated(text: str, reference: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return f"{text[:start]}\n\n{reference}\n{text[end:]}"


def test_docs_cli_md_is_the_cli_help() -> None:
    # In a fresh interpreter: click caches each command's help option when first built, so a
    # test elsewhere in this process that parsed a command on its own could change the output.
    done = subprocess.run(
        [sys.executable, __file__, "--print"], capture_output=True, text=True, check=True
    )
    text = CLI_DOC.read_text(encoding="utf-8")
    expected = replace_generated(text, done.stdout.removesuffix("\n"))
    assert text == expected, (
        "docs/cli.md is out of date with the CLI: run"
        " `.venv/bin/python tests/test_examples_cli_reference.py`"
    )


def test_every_command_help_shows_an_example() -> None:
    without = [
        path
        for path, command, context in _commands(main, None, "hexdbt")
        if "example" not in command.get_help(context).lower()
    ]
    assert without == []


def test_every_top_level_command_is_in_the_hand_written_overview() -> None:
    overview = CLI_DOC.read_text(encoding="utf-8").split(BEGIN)[0]
    missing = [name for name in main.commands if f"`hexdbt {name}`" not in overview]
    assert missing == []


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_as_documented_completes_commands_and_options() -> None:
    script = Path(sys.executable).parent / "hexdbt"
    assert "_HEXDBT_COMPLETE=bash_source hexdbt" in CLI_DOC.read_text(encoding="utf-8")
    # What the documented line puts in ~/.bashrc, then what bash does on <TAB>.
    program = (
        'eval "$(_HEXDBT_COMPLETE=bash_source hexdbt)"\n'
        "COMP_WORDS=(hexdbt val); COMP_CWORD=1; _hexdbt_completion hexdbt\n"
        'echo "${COMPREPLY[@]}"\n'
        "COMPREPLY=(); COMP_WORDS=(hexdbt validate --re); COMP_CWORD=2; _hexdbt_completion hexdbt\n"
        'echo "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", program],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PATH": f"{script.parent}:{os.environ.get('PATH', '')}"},
    )
    assert done.stdout.splitlines() == ["validate", "--remote"]


if __name__ == "__main__" and sys.argv[1:] == ["--print"]:
    print(generated_reference())
elif __name__ == "__main__":
    CLI_DOC.write_text(
        replace_generated(CLI_DOC.read_text(encoding="utf-8"), generated_reference()),
        encoding="utf-8",
    )
    print(f"wrote {CLI_DOC.relative_to(ROOT)}")
