"""Map blur and neighbours: pixel AUROC and PRO of one PatchCore bundle at several blur sigmas and map
neighbour counts, on val-clean and on test-clean.

The evidence behind `linewatch.train.blur` (PatchCore picks its map's sigma and neighbours by val-clean PRO):
does the pair val-clean ranks first also rank first on test-clean? Each data set gets a bundle fitted on
train-clean only (`--no-val-goods`, so val-clean's good images are unseen by the model that scores them),
then inspect-eval's pipeline scores val-clean and test-clean with the bundle's blur and map neighbours set to
each pair (image scores do not move: PatchCore's is the nearest neighbour's distance, before the blur).
Accuracy only, so it may run beside other work.

    .venv/bin/python tools/bench_blur.py --data ../shared/data/mvtec_ad/transistor [--data ...] \
        [--neighbours 1,3,5] --out bench-out/blur
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
NEIGHBOURS = "1"


def with_map(bundle: Path, sigma: float, neighbours: int, out: Path) -> Path:
    """A copy of the bundle whose maps use `sigma` and average `neighbours` bank patches (bundles refuse links,
    so the files are copied)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["postprocess"] = {**manifest["postprocess"], "blur_sigma": sigma}
    manifest["postprocess"].pop("blur", None)
    manifest["detector"]["map_k"] = neighbours
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def sweep(data: Path, sigmas: list[float], neighbours: list[int], work: Path) -> list[dict[str, Any]]:
    bundle = work / "bundle"
    if not (bundle / "manifest.json").is_file():
        train(resolve_training(None, {"data": data, "out": bundle, "val_goods": False, "blur_sigma": 4.0,
                                      "map_knn": 1}), progress=False)
    splits = json.loads((bundle / "splits.json").read_text())
    val_as_test = work / "val_as_test.json"
    val_as_test.write_text(json.dumps({**splits, "test": splits["val"]}))
    rows = []
    for k in neighbours:
        for sigma in sigmas:
            copy = with_map(bundle, sigma, k, work / f"k{k}-sigma-{sigma:g}")
            row: dict[str, Any] = {"data": data.name, "neighbours": k, "sigma": sigma}
            for split, file in (("val", val_as_test), ("test", None)):
                metrics = evaluate(copy, data, work / f"eval-k{k}-{sigma:g}-{split}", progress=False,
                                   splits_file=file, plots=False)
                row[split] = {key: metrics[key] for key in ("image_auroc", "pixel_auroc", "pro")}
            shutil.rmtree(copy)
            rows.append(row)
            click.echo(f"{data.name} neighbours {k} sigma {sigma:g}: val PRO {row['val']['pro']:.4f}, "
                       f"test PRO {row['test']['pro']:.4f}")
    return rows


@click.command()
@click.option("--data", "datasets", multiple=True, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--sigmas", default=SIGMAS, show_default=True)
@click.option("--neighbours", default=NEIGHBOURS, show_default=True, help="Map neighbour counts (PatchCore map_k).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/blur"), show_default=True)
def main(datasets: tuple[Path, ...], sigmas: str, neighbours: str, out: Path) -> None:
    values = [float(s) for s in sigmas.split(",")]
    counts = [int(k) for k in neighbours.split(",")]
    rows = [row for data in datasets for row in sweep(data, values, counts, out / data.name)]
    lines = ["| data | neighbours | sigma | val pixel AUROC / PRO | test pixel AUROC / PRO |", "|---|---|---|---|---|"]
    for data in dict.fromkeys(r["data"] for r in rows):
        mine = [r for r in rows if r["data"] == data]
        best_val = max(mine, key=lambda r: r["val"]["pro"])
        best_test = max(mine, key=lambda r: r["test"]["pro"])
        for r in mine:
            marks = (" (val's pick)" if r is best_val else "") + (" (test's best)" if r is best_test else "")
            lines.append(f"| {data} | {r['neighbours']} | {r['sigma']:g}{marks} | {r['val']['pixel_auroc']:.4f} / "
                         f"{r['val']['pro']:.4f} | {r['test']['pixel_auroc']:.4f} / {r['test']['pro']:.4f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "blur.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "blur.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
