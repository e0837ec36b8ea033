"""Every `mmrwkv ...` command the README, docs/*.md and the help texts show parses with today's flags (a renamed or
removed flag in the docs fails here), and the help says what the commands take."""

import re
import shlex
from pathlib import Path

import pytest

from mmrwkv.cli import EXAMPLES, build_parser
from mmrwkv.commands.recipe import EVAL_EPILOG, RECIPE_EPILOG, _eval_options

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _readme_commands() -> list[str]:
    return [command for path in DOCUMENTS for command in _commands_in(path.read_text())]


def _commands_in(text: str) -> list[str]:
    blocks = [
        line for block in re.findall(r"```\n(.*?)```", text, re.S) for line in block.replace("\\\n", " ").splitlines()
    ]
    # inline spans may wrap over lines
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))]
    commands = [c for c in blocks + spans if re.match(r"(\w+=\S+ )*mmrwkv [a-z]", c.split("#")[0].strip())]
    # `mmrwkv info` or `mmrwkv bench {wkv,...}` in prose name a command; they are not invocations
    # (also `mmrwkv bench NAME`, `mmrwkv bench ...`: placeholders)
    return [c for c in commands if len(c.split()) > 2 and not _placeholder(c.split()[2]) or c == "mmrwkv demo"]


def _placeholder(word: str) -> bool:
    return word.startswith("{") or word == "..." or word.isupper()


def _help_commands() -> list[str]:
    text = "\n".join([EXAMPLES, EVAL_EPILOG, RECIPE_EPILOG.format(command="run")]).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith("mmrwkv ")]


def _argv(command: str) -> list[str]:
    words = shlex.split(command.split(" #")[0])
    while "=" in words[0]:
        words.pop(0)
    assert words[0] == "mmrwkv"
    return words[1:]


def _parse(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if argv[0] == "eval" and not (args.task or args.suite or args.list_tasks):
        _eval_options(args.rest)


def test_the_docs_show_the_commands_this_checks():
    commands = _readme_commands()
    assert len(commands) >= 10
    for name in ("generate", "train", "eval", "convert", "bench decode", "bench demo", "run"):
        assert any(f"mmrwkv {name}" in c for c in commands), name
    readme = (ROOT / "README.md").read_text()
    # the README opens with the two commands that work on a fresh machine
    assert readme.index("make run") < 200 and readme.index("make test") < 300


@pytest.mark.parametrize("command", _readme_commands() + _help_commands())
def test_documented_command_parses(command):
    for part in command.split(" && "):
        try:
            _parse(_argv(part))
        except SystemExit as err:
            pytest.fail(f"{part!r} does not parse (exit {err.code})")


def test_eval_help_lists_its_options_as_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--help"])
    out = capsys.readouterr().out
    assert "positional arguments:\n  recipe" in out and "--checkpoint CKPT  (required)" in out
    assert "positional arguments:\n  --checkpoint" not in out.replace("  recipe", "")


def test_python_dash_m_runs_the_cli_and_a_closed_pipe_ends_quietly():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mmrwkv", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "examples" in done.stdout
    # the reader closes the pipe before the command writes: no traceback, exit 141 (128 + SIGPIPE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmrwkv", "info", "v7-0.1b"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == b""
