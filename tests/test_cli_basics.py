"""The command line: help without torch, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from edgecnn.cli import COMMANDS, cli


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_import_and_help_do_not_import_torch() -> None:
    code = (
        "import sys, edgecnn, edgecnn.cli\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(edgecnn.cli.cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_data_dir_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
