"""Site files (inspect-run --config --line) and the deployment examples under configs/."""

from __future__ import annotations

import configparser
import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from click.testing import CliRunner

from linewatch.config import ConfigError
from linewatch.data.synthetic import make_synthetic_category
from linewatch.runtime import cli as run_cli
from linewatch.runtime.journal import read_journal
from linewatch.runtime.site import line_options, read_site
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "site-example.yaml"


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_example_site_file_validates_and_merges_defaults_into_each_line() -> None:
    lines = read_site(EXAMPLE)
    assert list(lines) == ["bottle-1", "bottle-2", "tiles"]
    assert lines["bottle-1"]["engine"] == "triton" and lines["bottle-1"]["runtime_name"] == "bottle-1"
    assert lines["bottle-2"]["journal"] == Path("/var/lib/linewatch/bottle-2.jsonl")  # the line's own key wins
    assert lines["tiles"]["precision"] == "int8" and lines["tiles"]["batch"] == 8
    assert len(lines["tiles"]["sources"]) == 2 and lines["tiles"]["triton_url"] == "gpu-1.plant-a:8001"


@pytest.mark.parametrize(("doc", "message"), [
    ({"lines": {"a": {"bundle": "b", "sources": ["x"], "batchsize": 4}}}, "line 'a': unknown key(s) 'batchsize'"),
    ({"lines": {"a": {"bundle": "b", "sources": ["x"], "batch": "four"}}}, "line 'a'): expected int, got str 'four'"),
    ({"lines": {"a": {"sources": ["x"]}}}, "line 'a' has no bundle"),
    ({"defaults": {"engine": "gpu"}, "lines": {"a": {"bundle": "b", "sources": "x"}}}, "'gpu' is not one of"),
    ({"lines": {}}, "non-empty 'lines'"),
    ({"sites": {}, "lines": {"a": {"bundle": "b", "sources": "x"}}}, "unknown section"),
])
def test_bad_site_files_are_refused_with_the_file_line_and_key(tmp_path: Path, doc: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_site(_write(tmp_path / "site.yaml", doc))


def test_choosing_a_line(tmp_path: Path) -> None:
    two = _write(tmp_path / "two.yaml", {"lines": {"a": {"bundle": "b", "sources": "x"},
                                                   "b": {"bundle": "b", "sources": ["y", "z"]}}})
    with pytest.raises(ConfigError, match="choose one with --line"):
        line_options(two, None)
    with pytest.raises(ConfigError, match="no line 'c'; lines: a, b"):
        line_options(two, "c")
    assert line_options(two, "b")["sources"] == ("y", "z")
    one = _write(tmp_path / "one.yaml", {"lines": {"only": {"bundle": "b", "sources": "x"}}})
    assert line_options(one, None)["runtime_name"] == "only"


def test_command_line_options_override_the_site_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = _write(tmp_path / "site.yaml", {"defaults": {"batch": 2, "engine": "onnxruntime"},
                                           "lines": {"l1": {"bundle": str(tmp_path), "sources": ["x"], "batch": 3}}})
    captured: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_runtime(options: Any) -> None:
        captured["options"] = options
        raise Stop

    monkeypatch.setattr("linewatch.runtime.pipeline.Runtime", fake_runtime)
    result = CliRunner().invoke(run_cli.main, ["--config", str(site), "--line", "l1", "--batch", "5",
                                               "--triton-retry", "7"])
    assert isinstance(result.exception, Stop), result.output
    options = captured["options"]
    assert options.batch == 5 and options.engine == "onnxruntime" and options.runtime_name == "l1"
    assert options.sources == ("x",) and options.triton_retry_s == 7.0 and options.max_wait_ms == 20.0
    result = CliRunner().invoke(run_cli.main, ["--line", "l1", "--bundle", "b", "--source", "x"])
    assert result.exit_code != 0 and "--line needs --config" in result.output
    result = CliRunner().invoke(run_cli.main, ["--source", "x"])
    assert result.exit_code != 0 and "--bundle and --source are required" in result.output


def test_inspect_run_runs_a_line_of_a_site_file(tmp_path: Path) -> None:
    data = make_synthetic_category(tmp_path / "cat", size=64, n_train=8, n_test_good=2, n_test_defect=2)
    bundle = tmp_path / "bundle"
    train(resolve_training(None, {"data": data, "out": bundle, "weights": "none", "image_size": 64}), progress=False)
    journal = tmp_path / "line.jsonl"
    site = _write(tmp_path / "site.yaml", {
        "defaults": {"engine": "torch", "device": "cpu", "publish": "tcp://127.0.0.1:*"},
        "lines": {"demo": {"bundle": str(bundle), "sources": [f"parts={data / 'test'}"], "journal": str(journal)},
                  "other": {"bundle": "elsewhere", "sources": "camera9"}}})
    result = CliRunner().invoke(run_cli.main, ["--config", str(site), "--line", "demo"])
    assert result.exit_code == 0, result.output
    headers = read_journal(journal)
    assert len(headers) == len(list((data / "test").rglob("*.png"))) and {h["source"] for h in headers} == {"parts"}


def _unit_command(path: Path) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(path.read_text().replace("\\\n", " "))
    return shlex.split(parser["Service"]["ExecStart"])


@pytest.mark.parametrize("unit", ["linewatch-runtime@.service", "linewatch-proxy.service"])
def test_systemd_units_call_installed_commands_with_options_they_accept(unit: str) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    command = _unit_command(ROOT / "configs" / "deploy" / unit)
    name = Path(command[0]).name
    module, function = scripts[name].split(":")
    click_command = getattr(importlib.import_module(module), function)
    click_command.make_context(name, [a.replace("%i", "bottle-1") for a in command[1:]])  # raises on a bad option


def test_dashboard_unit_subscribes_to_the_proxy_backend() -> None:
    proxy = _unit_command(ROOT / "configs" / "deploy" / "linewatch-proxy.service")
    dashboard = _unit_command(ROOT / "configs" / "deploy" / "linewatch-dashboard.service")
    backend_port = proxy[proxy.index("--backend") + 1].rsplit(":", 1)[1]
    assert Path(dashboard[0]).name == "inspect-dashboard"
    assert dashboard[dashboard.index("--connect") + 1].endswith(f":{backend_port}")
