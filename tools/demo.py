"""`make demo`: the whole job on the embedded synthetic category, through the real console scripts.

generate data -> inspect-train -> inspect-eval -> export-model --format onnx -> inspect-run over the test
folder publishing on loopback while inspect-listen receives and saves overlays -> summary.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click

from linewatch.data.synthetic import make_synthetic_category

BIN = Path(sys.executable).parent
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo-synthetic.yaml"


def command(*args: str) -> list[str]:
    click.secho("$ " + " ".join(args), fg="cyan")
    return [str(BIN / args[0]), *args[1:]]


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--port", type=int, default=5556, show_default=True, help="Loopback port for the verdict stream.")
def main(out: Path, port: int) -> None:
    start = time.perf_counter()
    data = make_synthetic_category(out / "data" / "synthetic")
    click.echo(f"synthetic category written to {data}")
    bundle, report, overlays = out / "bundle", out / "report", out / "overlays"
    address = f"tcp://127.0.0.1:{port}"
    subprocess.run(command("inspect-train", "--config", str(CONFIG), "--data", str(data), "--out", str(bundle)),
                   check=True)
    subprocess.run(command("inspect-eval", "--bundle", str(bundle), "--data", str(data), "--out", str(report),
                           "--save-maps"), check=True)
    subprocess.run(command("export-model", str(bundle), "--format", "onnx"), check=True)
    listener = subprocess.Popen(command("inspect-listen", "--connect", address, "--save-overlays", str(overlays),
                                        "--timeout", "20"))
    try:
        subprocess.run(command("inspect-run", "--bundle", str(bundle), "--source", str(data / "test"),
                               "--publish", address, "--wait-subscribers", "1", "--journal",
                               str(out / "journal.jsonl"), "--summary", str(out / "summary.json")), check=True)
    finally:
        listener.wait(timeout=60)
    metrics = json.loads((report / "metrics.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    click.echo(f"\ndone in {time.perf_counter() - start:.0f} s")
    click.echo(f"  bundle:   {bundle} (manifest.json, network.onnx, memory_bank.npy, ...)")
    click.echo(f"  report:   {report} (metrics.json, scores.csv, plots, maps/)")
    click.echo(f"  stream:   {summary['frames']} verdicts published on {address}, journal {out / 'journal.jsonl'}")
    click.echo(f"  overlays: {overlays} ({len(list(overlays.glob('*.png')))} PNG files from inspect-listen)")
    click.echo(f"  image AUROC {metrics['image_auroc']:.3f}, pixel AUROC {metrics['pixel_auroc']:.3f}, "
               f"PRO {metrics['pro']:.3f}; runtime {summary['fps']:.1f} fps, p50 latency "
               f"{summary['latency_ms']['p50']:.1f} ms")
    venv = BIN.relative_to(Path.cwd()) if BIN.is_relative_to(Path.cwd()) else BIN
    click.echo("\nwatch the stream live in a browser (two terminals; then open http://127.0.0.1:8080/):")
    click.echo(f"  {venv / 'inspect-dashboard'} --connect {address}")
    click.echo(f"  {venv / 'inspect-run'} --bundle {bundle} --source {data / 'test'} --publish {address} --send-frames")


if __name__ == "__main__":
    main()
