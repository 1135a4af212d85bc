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


def run(*args: str) -> None:
    click.secho("$ " + " ".join(args), fg="cyan")
    subprocess.run([str(BIN / args[0]), *args[1:]], check=True)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--port", type=int, default=5556, show_default=True, help="Loopback port for the verdict stream.")
def main(out: Path, port: int) -> None:
    start = time.perf_counter()
    data = make_synthetic_category(out / "data" / "synthetic")
    click.echo(f"synthetic category written to {data}")
    bundle, report = out / "bundle", out / "report"
    run("inspect-train", "--config", str(CONFIG), "--data", str(data), "--out", str(bundle))
    run("inspect-eval", "--bundle", str(bundle), "--data", str(data), "--out", str(report), "--save-maps")
    metrics = json.loads((report / "metrics.json").read_text())
    click.echo(f"\ndone in {time.perf_counter() - start:.0f} s")
    click.echo(f"  bundle:  {bundle}")
    click.echo(f"  report:  {report} (metrics.json, scores.csv, roc.png, pr.png, pro.png, examples.png, maps/)")
    click.echo(f"  image AUROC {metrics['image_auroc']:.3f}, pixel AUROC {metrics['pixel_auroc']:.3f}, "
               f"PRO {metrics['pro']:.3f}")


if __name__ == "__main__":
    main()
