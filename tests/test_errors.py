"""User errors print one line and exit with status 2; bugs keep their traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from linewatch.bundle import BundleError
from linewatch.cli_common import USER_ERROR_EXIT, friendly_errors
from linewatch.config import ConfigError
from linewatch.data import DataError
from linewatch.engines import EngineUnavailable
from linewatch.errors import DeviceUnavailable, LinewatchError
from linewatch.export.parity import ParityError
from linewatch.features.weights import WeightsError
from linewatch.runtime.journal import JournalError
from linewatch.runtime.message_check import MessageError


def test_every_user_error_is_a_linewatch_error_and_keeps_its_old_base() -> None:
    for error, old_base in [(DataError, ValueError), (BundleError, ValueError), (ConfigError, ValueError),
                            (WeightsError, RuntimeError), (ParityError, ValueError), (EngineUnavailable, ValueError),
                            (DeviceUnavailable, RuntimeError), (MessageError, ValueError), (JournalError, OSError)]:
        assert issubclass(error, LinewatchError) and issubclass(error, old_base), error


def _command(exc: BaseException) -> click.Command:
    @click.command()
    @friendly_errors
    def main() -> None:
        raise exc

    return main


def test_user_error_is_one_line_with_exit_status_2() -> None:
    result = CliRunner().invoke(_command(DataError("part.png: image is truncated\n(PNG has no IEND)")))
    assert result.exit_code == USER_ERROR_EXIT == 2
    assert result.output == "Error: part.png: image is truncated (PNG has no IEND)\n"


def test_bug_is_not_dressed_up_as_a_user_error() -> None:
    result = CliRunner().invoke(_command(ValueError("index out of range in the scorer")))
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "Error:" not in result.output


@pytest.mark.parametrize("args, message", [
    (["linewatch.runtime.listen", "--connect", "nowhere", "--timeout", "1"], "Error: cannot connect to 'nowhere'"),
    (["linewatch.evaluate.cli", "--bundle", "absent", "--data", ".", "--out", "x"],
     "Error: bundle directory not found: absent"),
])
def test_real_cli_user_errors(args: list[str], message: str, tmp_path: Path) -> None:
    module, *options = args
    command = [sys.executable, "-c", f"from {module} import main; main()", *options]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(message), out.stderr


def test_real_cli_bug_prints_its_traceback(tmp_path: Path) -> None:
    code = ("import linewatch.evaluate.pipeline as p\n"
            "def broken(*args, **kwargs):\n"
            "    raise ValueError('a bug in evaluate')\n"
            "p.evaluate = broken\n"
            "from linewatch.evaluate.cli import main\n"
            "main()")
    command = [sys.executable, "-c", code, "--bundle", "b", "--data", ".", "--out", "x"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and "ValueError: a bug in evaluate" in out.stderr
    assert not any(line.startswith("Error:") for line in out.stderr.splitlines())


def test_bad_source_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    from linewatch.runtime.cli import main as run_main

    result = CliRunner().invoke(run_main, ["--bundle", str(tmp_path / "no-bundle"), "--source", "nowhere/*.png",
                                           "--publish", "tcp://127.0.0.1:*"])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: source 'nowhere/*.png': the glob pattern matches no files"
