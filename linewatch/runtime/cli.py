"""`inspect-run`: score frames from cameras, videos, streams or folders and publish verdicts over ZeroMQ."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from linewatch.cli_common import friendly_errors, setup_logging
from linewatch.engines.base import DEVICE_CHOICES, ENGINE_CHOICES, PRECISION_CHOICES
from linewatch.runtime.journal import ON_ERROR_CHOICES
from linewatch.runtime.publisher import DEFAULT_ADDRESS, SNDHWM
from linewatch.runtime.stats import reliability_lines


def _format_summary(summary: dict) -> str:
    stages = ", ".join(f"{k}{' (CPU)' if k == 'preprocess' else ''} {v:.2f}" for k, v in summary["stage_ms"].items())
    lat = summary["latency_ms"]
    return (f"{summary['frames']} frames in {summary['wall_s']:.1f} s ({summary['fps']:.1f} fps), "
            f"{summary['drops']} dropped, {summary['errors']} errors\n"
            f"  latency ms p50 {lat['p50']:.1f} / p95 {lat['p95']:.1f} / p99 {lat['p99']:.1f}\n"
            f"  mean ms per frame: {stages}\n"
            f"  engine {summary['engine']}, model {summary['model']}, published on {summary['endpoint']}"
            f"{reliability_lines(summary)}")


def _with_site(ctx: click.Context, config: Path | None, line: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """Options given on the command line, over the site file's line (and its defaults), over the defaults."""
    if config is None:
        if line:
            raise click.UsageError("--line needs --config SITE_FILE")
        return values
    from linewatch.runtime.site import line_options

    site = line_options(config, line)
    explicit = {key for key in values if ctx.get_parameter_source(key) == ParameterSource.COMMANDLINE}
    return {**values, **{key: value for key, value in site.items() if key not in explicit}}


@click.command(context_settings={"show_default": True})
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="Site file (YAML) describing lines; see configs/site-example.yaml.")
@click.option("--line", help="The line of --config to run (needed when it has several).")
@click.option("--bundle", type=click.Path(path_type=Path), help="Model bundle directory (required unless --config).")
@click.option("--source", "sources", multiple=True,
              help="camera0 | N | video file | rtsp:// or http(s):// URL | folder | glob; NAME=SPEC names it. "
                   "Repeatable.")
@click.option("--watch", is_flag=True, help="Folder/glob sources keep polling for new files.")
@click.option("--loop", is_flag=True, help="Video, folder and glob sources start again at their end (not with "
                                          "--watch); a looping file source that disappears is retried with backoff.")
@click.option("--batch", type=click.IntRange(1, 256), default=4, help="Frames per backbone batch at most.")
@click.option("--max-wait-ms", type=click.FloatRange(0), default=20.0, help="Longest wait to fill a batch.")
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="auto",
              help="auto: TensorRT, else onnxruntime, else torch (never triton).")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="fp32",
              help="int8: the network export-model --int8 wrote, with its re-calibrated threshold.")
@click.option("--triton-url", help="--engine triton: the Triton server's gRPC HOST:PORT (usually :8001).")
@click.option("--triton-model", help="--engine triton: model name (default: the one export-model recorded).")
@click.option("--triton-timeout", type=click.FloatRange(0, min_open=True), default=10.0,
              help="--engine triton: seconds one request may take before it counts as failed.")
@click.option("--triton-retry", type=click.FloatRange(0), default=60.0,
              help="--engine triton: seconds a failing batch is retried (backoff 0.5 s doubling to 10 s) before "
                   "its frames count as errors.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for inference (default: all cores).")
@click.option("--publish", default=DEFAULT_ADDRESS, help="ZeroMQ address to bind the verdict publisher to.")
@click.option("--publish-connect", help="Connect the publisher to this address (an inspect-proxy frontend) "
                                         "instead of binding --publish.")
@click.option("--send-frames", is_flag=True, help="Add the JPEG frame as a fourth message part.")
@click.option("--wait-subscribers", type=click.IntRange(0), default=0,
              help="Hold the first frame until N subscribers have subscribed.")
@click.option("--wait-timeout", type=click.FloatRange(0), default=10.0, help="Seconds to wait for subscribers.")
@click.option("--journal", type=click.Path(path_type=Path), help="Append every verdict header as a JSON line.")
@click.option("--on-journal-error", type=click.Choice(ON_ERROR_CHOICES), default="stop",
              help="When the journal cannot be written (disk full): stop (exit status 2), or go on publishing "
                   "verdicts that are not journalled.")
@click.option("--send-hwm", type=click.IntRange(1), default=SNDHWM,
              help="Verdicts queued per subscriber before ZeroMQ drops for that subscriber (it sees seq gaps).")
@click.option("--summary", "summary_file", type=click.Path(path_type=Path), help="Write the exit summary as JSON.")
@click.option("--name", "runtime_name", default="linewatch", help="Runtime name, used in status.<name>.")
@click.option("--queue-size", type=click.IntRange(1), default=8, help="Decoded frames buffered per file source.")
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
@friendly_errors
def main(ctx: click.Context, config: Path | None, line: str | None, verbose: bool, **values: Any) -> None:
    """Watch SOURCES, score every frame with BUNDLE and publish verdicts; Ctrl-C or SIGTERM ends cleanly."""
    from linewatch.runtime.pipeline import RunOptions, Runtime

    setup_logging(verbose)
    o = _with_site(ctx, config, line, values)
    if not o["bundle"] or not o["sources"]:
        raise click.UsageError("--bundle and --source are required (or a --config site file that sets them)")
    summary_file = o["summary_file"]
    runtime = Runtime(RunOptions(
        bundle=o["bundle"], sources=tuple(o["sources"]), watch=o["watch"], loop=o["loop"], batch=o["batch"],
        max_wait_ms=o["max_wait_ms"], engine=o["engine"], device=o["device"], threads=o["threads"],
        publish=o["publish"], send_frames=o["send_frames"], wait_subscribers=o["wait_subscribers"],
        wait_timeout_s=o["wait_timeout"], journal=o["journal"], on_journal_error=o["on_journal_error"],
        send_hwm=o["send_hwm"], runtime_name=o["runtime_name"], queue_size=o["queue_size"],
        precision=o["precision"], triton_url=o["triton_url"], triton_model=o["triton_model"],
        triton_timeout_s=o["triton_timeout"], triton_retry_s=o["triton_retry"], publish_connect=o["publish_connect"],
    ))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: runtime.stop())
    click.echo(f"inspecting {', '.join(o['sources'])} with {runtime.engine.describe()}; "
               f"publishing on {runtime.publisher.endpoint}", err=True)
    summary = runtime.run()
    if summary_file:
        summary_file.parent.mkdir(parents=True, exist_ok=True)
        summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    click.echo(_format_summary(summary))
    if runtime.failure:
        raise runtime.failure
