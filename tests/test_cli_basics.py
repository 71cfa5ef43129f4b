"""The command line: every command's help and its examples, help without torch, one-line errors, exit codes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from edgecnn import __version__
from edgecnn.cli import COMMANDS, cli


def _commands() -> Iterator[list[str]]:
    """The path of every command and subcommand: ["demo"], ["data"], ["data", "synth"], ..."""
    ctx = click.Context(cli)

    def walk(cmd: click.Command, path: list[str]) -> Iterator[list[str]]:
        yield path
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, f"{' '.join(path)} lists {name} but has no such command"
                yield from walk(sub, [*path, name])

    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None, f"edgecnn {name} is listed but cannot be loaded"
        yield from walk(cmd, [name])


ALL = [" ".join(path) for path in _commands()]


def _examples(help_text: str) -> list[list[str]]:
    """The `edgecnn ...` lines of the Examples block, as argument lists (comments and continuations handled)."""
    parts = re.split(r"^ *Examples?:\n", help_text, maxsplit=1, flags=re.M)
    if len(parts) < 2:
        return []
    block = parts[1].split("\n\n")[0].replace("\\\n", " ")
    out = []
    for line in block.splitlines():
        args = shlex.split(line, comments=True)
        if "edgecnn" in args:  # also `torchrun ... -m edgecnn train ...`; other tools (curl, scp) are skipped
            out.append(args[args.index("edgecnn") + 1:])
    return out


def test_help_lists_every_command_with_its_summary() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = re.findall(r"^  (\S+)\s+(.+)$", result.output.split("Commands:")[1], flags=re.M)
    assert [name for name, _ in listed] == list(COMMANDS)
    for name, summary in listed:
        assert COMMANDS[name][2].startswith(summary.strip().rstrip(".")[:40]), (name, summary)


@pytest.mark.parametrize("command", ALL)
def test_every_command_help_has_examples_that_parse(command: str) -> None:
    path = command.split()
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="edgecnn")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: edgecnn {command} ")
    examples = _examples(result.output)
    assert any(args[: len(path)] == path for args in examples), f"`edgecnn {command} --help` shows no example of itself"
    for args in examples:
        # --help is eager, but click parses the whole line first: an option that does not exist fails here.
        parsed = CliRunner().invoke(cli, [*args, "--help"])
        assert parsed.exit_code == 0, f"example `edgecnn {shlex.join(args)}` does not parse: {parsed.output}"


def test_the_example_check_catches_a_bad_option() -> None:
    # The control case for the test above: an example with an option that does not exist must fail to parse.
    parsed = CliRunner().invoke(cli, ["bench", "model.onnx", "--no-such-option", "--help"])
    assert parsed.exit_code == 2 and "No such option" in parsed.output


def test_import_and_help_do_not_import_torch() -> None:
    # `edgecnn --help` imports no command module at all; every command's own --help stays free of the
    # training stack (torch, onnx), which a device with the base install does not have.
    code = (
        "import sys, edgecnn, edgecnn.cli\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(edgecnn.cli.cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "assert not bad, ('edgecnn --help', bad)\n"
        f"for command in {ALL!r}:\n"
        "    r = CliRunner().invoke(edgecnn.cli.cli, [*command.split(), '--help'])\n"
        "    assert r.exit_code == 0, (command, r.output)\n"
        "    bad = [m for m in ('torch', 'torchvision', 'onnx') if m in sys.modules]\n"
        "    assert not bad, (command, bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def _edgecnn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgecnn", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (["frobnicate"], ("No such command", "frobnicate")),
    (["bench", "--no-such-option"], ("No such option", "--no-such-option", "edgecnn bench --help")),
    (["--no-such-option"], ("No such option", "--no-such-option")),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], words: tuple[str, ...]) -> None:
    done = _edgecnn(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and all(w in lines[0] for w in words), done.stderr
    assert done.stdout == ""


def test_bad_input_is_one_line_exit_1(tmp_path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    done = _edgecnn("classify", "images", "-m", str(tmp_path / "broken.onnx"), str(tmp_path))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: ") and "broken.onnx" in lines[-1] and "Traceback" not in done.stderr


def test_unknown_data_dir_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
