"""`export-model`: a bundle's network as ONNX or a TensorRT engine, checked for score parity."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from linewatch.cli_common import friendly_errors, setup_logging
from linewatch.engines import ONNX_FILE, PLAN_FILE, EngineUnavailable, exported_file
from linewatch.engines.tensorrt_engine import tensorrt_problem
from linewatch.export.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, export_bundle_onnx
from linewatch.export.parity import FP16_TOLERANCE, FP32_TOLERANCE, ParityError, ParityReport, parity_samples
from linewatch.export.tensorrt_build import DEFAULT_MAX_BATCH


def _summary(bundle: Path, section: dict, report: ParityReport) -> str:
    size_mb = (bundle / section["file"]).stat().st_size / 1e6
    if section["file"] == ONNX_FILE:
        outputs = ", ".join(f"{name} {out['shape']}" for name, out in section["outputs"].items())
        detail = f"opset {section['opset']}, {section['input']['name']} {section['input']['shape']} -> {outputs}"
    else:
        detail = (f"TensorRT {section['tensorrt']} on {section['gpu']}, {section['precision']}, "
                  f"batch 1..{section['batch']['max']}")
    written = f"wrote {bundle / section['file']} ({detail}, {size_mb:.1f} MB); manifest updated"
    return f"{report.table()}\n{written}"


@click.command(context_settings={"show_default": True})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx", "trt"]), default="onnx",
              help=f"onnx: {ONNX_FILE} for onnxruntime; trt: {PLAN_FILE} for TensorRT (exports ONNX first "
                   "when the bundle has none).")
@click.option("--fp16", is_flag=True, help="TensorRT: allow FP16 kernels (parity limit becomes "
                                           f"{FP16_TOLERANCE:g} instead of {FP32_TOLERANCE:g}).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=DEFAULT_MAX_BATCH,
              help="TensorRT: largest batch the engine accepts (the ONNX batch axis is always dynamic).")
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET, help="ONNX opset.")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of images for the parity check (default: the bundle's training data).")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True),
              help="Largest allowed relative image-score difference (default 1e-3, or 2e-2 with --fp16).")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime threads for the parity check.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@friendly_errors
def main(bundle: Path, fmt: str, fp16: bool, max_batch: int, opset: int, images: Path | None,
         tolerance: float | None, threads: int | None, verbose: bool) -> None:
    """Export BUNDLE's network, check its outputs and scores against PyTorch and record it in the manifest."""
    from linewatch.inspector import Inspector

    setup_logging(verbose)
    for chatty in ("onnx_ir", "onnxscript"):  # the exporter's graph passes log every rewrite at INFO
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
    if fp16 and fmt == "onnx":
        raise click.UsageError("--fp16 applies to --format trt; the ONNX file is always FP32")
    if fmt == "trt" and (problem := tensorrt_problem()):
        raise EngineUnavailable(problem)
    inspector = Inspector.from_bundle(bundle)
    inspector.check_streamable()
    manifest = inspector.manifest
    samples = parity_samples(bundle, manifest, inspector.preprocessor, images)
    if samples.warning:
        click.echo(f"Warning: {samples.warning}", err=True)
    try:
        if fmt == "onnx" or exported_file(manifest, "onnx") not in manifest["files"]:
            onnx_limit = tolerance if fmt == "onnx" and tolerance else FP32_TOLERANCE
            manifest, report = export_bundle_onnx(bundle, inspector, samples, opset, onnx_limit, threads)
            click.echo(_summary(bundle, manifest["export"]["onnx"], report))
        if fmt == "trt":
            from linewatch.export.tensorrt_build import build_bundle_plan

            limit = tolerance or (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
            manifest, report = build_bundle_plan(bundle, inspector, manifest, samples, limit, max_batch, fp16)
            click.echo(_summary(bundle, manifest["export"]["tensorrt"], report))
    except ParityError as exc:
        click.echo(exc.report.table())
        raise
