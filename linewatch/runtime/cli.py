"""`inspect-run`: score frames from cameras, videos, streams or folders and publish verdicts over ZeroMQ."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click

from linewatch.cli_common import friendly_errors, setup_logging
from linewatch.runtime.engines import DEVICE_CHOICES, ENGINE_CHOICES
from linewatch.runtime.journal import ON_ERROR_CHOICES
from linewatch.runtime.publisher import DEFAULT_ADDRESS, SNDHWM
from linewatch.runtime.stats import reliability_lines


def _format_summary(summary: dict) -> str:
    stages = ", ".join(f"{k} {v:.2f}" for k, v in summary["stage_ms"].items())
    lat = summary["latency_ms"]
    return (f"{summary['frames']} frames in {summary['wall_s']:.1f} s ({summary['fps']:.1f} fps), "
            f"{summary['drops']} dropped, {summary['errors']} errors\n"
            f"  latency ms p50 {lat['p50']:.1f} / p95 {lat['p95']:.1f} / p99 {lat['p99']:.1f}\n"
            f"  mean ms per frame: {stages}\n"
            f"  engine {summary['engine']}, model {summary['model']}, published on {summary['endpoint']}"
            f"{reliability_lines(summary)}")


@click.command(context_settings={"show_default": True})
@click.option("--bundle", required=True, type=click.Path(path_type=Path), help="Model bundle directory.")
@click.option("--source", "sources", required=True, multiple=True,
              help="camera0 | N | video file | rtsp:// or http(s):// URL | folder | glob; NAME=SPEC names it. "
                   "Repeatable.")
@click.option("--watch", is_flag=True, help="Folder/glob sources keep polling for new files.")
@click.option("--loop", is_flag=True, help="Video, folder and glob sources start again at their end (not with "
                                          "--watch); a looping file source that disappears is retried with backoff.")
@click.option("--batch", type=click.IntRange(1, 256), default=4, help="Frames per backbone batch at most.")
@click.option("--max-wait-ms", type=click.FloatRange(0), default=20.0, help="Longest wait to fill a batch.")
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="auto")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for inference (default: all cores).")
@click.option("--publish", default=DEFAULT_ADDRESS, help="ZeroMQ address to bind the verdict publisher to.")
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
@friendly_errors
def main(bundle: Path, sources: tuple[str, ...], watch: bool, loop: bool, batch: int, max_wait_ms: float,
         engine: str, device: str, threads: int | None, publish: str, send_frames: bool, wait_subscribers: int,
         wait_timeout: float, journal: Path | None, on_journal_error: str, send_hwm: int, summary_file: Path | None,
         runtime_name: str, queue_size: int, verbose: bool) -> None:
    """Watch SOURCES, score every frame with BUNDLE and publish verdicts; Ctrl-C or SIGTERM ends cleanly."""
    import torch

    from linewatch.runtime.pipeline import RunOptions, Runtime

    setup_logging(verbose)
    if threads:
        torch.set_num_threads(threads)
    runtime = Runtime(RunOptions(
        bundle=bundle, sources=sources, watch=watch, loop=loop, batch=batch, max_wait_ms=max_wait_ms, engine=engine,
        device=device, threads=threads, publish=publish, send_frames=send_frames,
        wait_subscribers=wait_subscribers, wait_timeout_s=wait_timeout, journal=journal,
        on_journal_error=on_journal_error, send_hwm=send_hwm, runtime_name=runtime_name, queue_size=queue_size,
    ))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: runtime.stop())
    click.echo(f"inspecting {', '.join(sources)} with {runtime.engine.describe()}; "
               f"publishing on {runtime.publisher.endpoint}", err=True)
    summary = runtime.run()
    if summary_file:
        summary_file.parent.mkdir(parents=True, exist_ok=True)
        summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    click.echo(_format_summary(summary))
    if runtime.failure:
        raise runtime.failure
