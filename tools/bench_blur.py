"""Map blur: pixel AUROC and PRO of one PatchCore bundle at several blur sigmas, on val-clean and on test-clean.

The evidence behind `linewatch.train.blur` (PatchCore picks its sigma by val-clean PRO): does the sigma that
val-clean ranks first also rank first on test-clean? Each data set gets a bundle fitted on train-clean only
(`--no-val-goods`, so val-clean's good images are unseen by the model that scores them), then inspect-eval's
pipeline scores val-clean and test-clean with the bundle's blur set to each sigma (image scores do not move:
PatchCore's is the maximum patch score). Accuracy only, so it may run beside other work.

    .venv/bin/python tools/bench_blur.py --data ../shared/data/mvtec_ad/transistor [--data ...] --out bench-out/blur
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from linewatch.evaluate.pipeline import evaluate
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

SIGMAS = "2,4,6,8"


def with_sigma(bundle: Path, sigma: float, out: Path) -> Path:
    """A copy of the bundle whose maps use `sigma` (bundles refuse links, so the files are copied)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["postprocess"] = {**manifest["postprocess"], "blur_sigma": sigma}
    manifest["postprocess"].pop("blur", None)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def sweep(data: Path, sigmas: list[float], work: Path) -> list[dict[str, Any]]:
    bundle = work / "bundle"
    if not (bundle / "manifest.json").is_file():
        train(resolve_training(None, {"data": data, "out": bundle, "val_goods": False, "blur_sigma": 4.0}),
              progress=False)
    splits = json.loads((bundle / "splits.json").read_text())
    val_as_test = work / "val_as_test.json"
    val_as_test.write_text(json.dumps({**splits, "test": splits["val"]}))
    rows = []
    for sigma in sigmas:
        copy = with_sigma(bundle, sigma, work / f"sigma-{sigma:g}")
        row: dict[str, Any] = {"data": data.name, "sigma": sigma}
        for split, file in (("val", val_as_test), ("test", None)):
            metrics = evaluate(copy, data, work / f"eval-{sigma:g}-{split}", progress=False, splits_file=file,
                               plots=False)
            row[split] = {k: metrics[k] for k in ("image_auroc", "pixel_auroc", "pro")}
        rows.append(row)
        click.echo(f"{data.name} sigma {sigma:g}: val PRO {row['val']['pro']:.4f}, test PRO {row['test']['pro']:.4f}")
    return rows


@click.command()
@click.option("--data", "datasets", multiple=True, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--sigmas", default=SIGMAS, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/blur"), show_default=True)
def main(datasets: tuple[Path, ...], sigmas: str, out: Path) -> None:
    values = [float(s) for s in sigmas.split(",")]
    rows = [row for data in datasets for row in sweep(data, values, out / data.name)]
    lines = ["| data | sigma | val pixel AUROC / PRO | test pixel AUROC / PRO |", "|---|---|---|---|"]
    for data in dict.fromkeys(r["data"] for r in rows):
        mine = [r for r in rows if r["data"] == data]
        best_val = max(mine, key=lambda r: r["val"]["pro"])["sigma"]
        best_test = max(mine, key=lambda r: r["test"]["pro"])["sigma"]
        for r in mine:
            marks = (" (val's pick)" if r["sigma"] == best_val else "") + (" (test's best)" if r["sigma"] == best_test
                                                                            else "")
            lines.append(f"| {data} | {r['sigma']:g}{marks} | {r['val']['pixel_auroc']:.4f} / {r['val']['pro']:.4f} | "
                         f"{r['test']['pixel_auroc']:.4f} / {r['test']['pro']:.4f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "blur.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "blur.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
