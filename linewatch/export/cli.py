"""`export-model`: a bundle's network as ONNX (fp32, checked for score parity; int8, checked for accuracy),
a TensorRT engine, or a Triton model repository."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from linewatch.cli_common import friendly_errors, setup_logging
from linewatch.engines import INT8_FILE, ONNX_FILE, PLAN_FILE, PRECISION_CHOICES, EngineUnavailable, exported_file
from linewatch.engines.tensorrt_engine import tensorrt_problem
from linewatch.export import int8 as int8_export
from linewatch.export import triton_repo
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


def _triton_summary(record: dict) -> str:
    return (f"wrote Triton model {record['model']!r} ({record['backend']}, {record['kind']} x{record['instances']}, "
            f"max batch {record['max_batch_size']}, preferred {record['preferred_batch_sizes']}, queue delay "
            f"{record['max_queue_delay_us']} us) to {record['repository']}; manifest updated\n"
            f"serve it: tritonserver --model-repository {record['repository']}; run: inspect-run --engine triton "
            f"--triton-url HOST:8001")


@click.command(context_settings={"show_default": True})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx", "trt", "triton"]), default="onnx",
              help=f"onnx: {ONNX_FILE} for onnxruntime; trt: {PLAN_FILE} for TensorRT; triton: a Triton model "
                   "repository in --out (trt and triton export ONNX first when the bundle has none).")
@click.option("--int8", "int8", is_flag=True,
              help=f"onnx: also write {INT8_FILE}, statically quantised (QDQ) on the training images and "
                   "checked for accuracy on val-clean.")
@click.option("--max-auroc-loss", type=click.FloatRange(0), default=int8_export.DEFAULT_MAX_AUROC_LOSS,
              help="--int8: largest image AUROC loss vs fp32 on val-clean before the export is refused.")
@click.option("--force", is_flag=True, help="--int8: keep the int8 network even when it fails the accuracy check.")
@click.option("--calibration-images", type=click.IntRange(1), default=int8_export.DEFAULT_CALIBRATION_IMAGES,
              help="--int8: training images that calibrate the activation ranges.")
@click.option("--calibration-method", type=click.Choice(int8_export.CALIBRATION_METHODS), default="minmax",
              help="--int8: how onnxruntime turns calibration activations into ranges.")
@click.option("--out", "repository", type=click.Path(file_okay=False, path_type=Path),
              help="triton: the model repository to write the model into (created if needed).")
@click.option("--model-name", help="triton: model name (default: the bundle id, with -int8 for --precision int8).")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="fp32",
              help=f"triton: serve {ONNX_FILE} (fp32) or {INT8_FILE} (int8).")
@click.option("--backend", type=click.Choice(triton_repo.BACKENDS), default="onnxruntime",
              help="triton: onnxruntime_onnx platform; python (the ONNX file in onnxruntime inside Triton's Python "
                   f"backend, for servers without the onnxruntime backend); tensorrt ({PLAN_FILE}).")
@click.option("--kind", type=click.Choice(triton_repo.KINDS), default="gpu", help="triton: instance_group kind.")
@click.option("--instances", type=click.IntRange(1, 64), default=1, help="triton: model instances per device.")
@click.option("--max-queue-delay-us", type=click.IntRange(0), default=triton_repo.DEFAULT_QUEUE_DELAY_US,
              help="triton: longest a request waits for others to fill a preferred batch.")
@click.option("--server-threads", type=click.IntRange(1),
              help="triton: onnxruntime intra-op threads per instance (default: the server's).")
@click.option("--fp16", is_flag=True, help="TensorRT: allow FP16 kernels (parity limit becomes "
                                           f"{FP16_TOLERANCE:g} instead of {FP32_TOLERANCE:g}).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=DEFAULT_MAX_BATCH,
              help="TensorRT / triton: largest batch the engine or the Triton model accepts.")
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET, help="ONNX opset.")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of images for the parity check (default: the bundle's training data).")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True),
              help="Largest allowed relative image-score difference (default 1e-3, or 2e-2 with --fp16).")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime threads for the parity check.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@friendly_errors
def main(bundle: Path, fmt: str, int8: bool, max_auroc_loss: float, force: bool, calibration_images: int,
         calibration_method: str, repository: Path | None, model_name: str | None, precision: str, backend: str,
         kind: str, instances: int, max_queue_delay_us: int, server_threads: int | None, fp16: bool, max_batch: int,
         opset: int, images: Path | None, tolerance: float | None, threads: int | None, verbose: bool) -> None:
    """Export BUNDLE's network, check it against PyTorch (or, int8, on accuracy) and record it in the manifest."""
    from linewatch.inspector import Inspector

    setup_logging(verbose)
    for chatty in ("onnx_ir", "onnxscript"):  # the exporter's graph passes log every rewrite at INFO
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
    if fp16 and fmt != "trt":
        raise click.UsageError("--fp16 applies to --format trt; the ONNX file is always FP32")
    if int8 and fmt != "onnx":
        raise click.UsageError("--int8 applies to --format onnx (then serve it with --format triton --precision int8)")
    if fmt == "triton" and repository is None:
        raise click.UsageError("--format triton needs --out MODEL_REPO")
    if fmt == "trt" and (problem := tensorrt_problem()):
        raise EngineUnavailable(problem)
    inspector = Inspector.from_bundle(bundle)
    inspector.check_streamable()
    manifest = inspector.manifest
    onnx_recorded = exported_file(manifest, "onnx") in manifest["files"]
    try:
        if (fmt == "onnx" and not (int8 and onnx_recorded)) or not onnx_recorded:
            samples = parity_samples(bundle, manifest, inspector.preprocessor, images)
            if samples.warning:
                click.echo(f"Warning: {samples.warning}", err=True)
            onnx_limit = tolerance if fmt == "onnx" and tolerance else FP32_TOLERANCE
            manifest, report = export_bundle_onnx(bundle, inspector, samples, opset, onnx_limit, threads)
            click.echo(_summary(bundle, manifest["export"]["onnx"], report))
            inspector.manifest = manifest
        if int8:
            manifest, int8_report = int8_export.export_bundle_int8(
                inspector, max_auroc_loss, calibration_images, calibration_method, force, threads)
            click.echo(int8_report.table())
            section = manifest["export"]["onnx_int8"]
            click.echo(f"wrote {bundle / INT8_FILE} ({(bundle / INT8_FILE).stat().st_size / 1e6:.1f} MB, "
                       f"threshold re-calibrated on int8 scores: {section['calibration']['threshold']:.5g}); "
                       f"manifest updated; run it with inspect-run --precision int8")
        if fmt == "triton":
            manifest, record = triton_repo.write_repository(
                bundle, manifest, repository, model_name, max_batch, instances, kind, backend, precision,
                max_queue_delay_us, server_threads)
            click.echo(_triton_summary(record))
        if fmt == "trt":
            from linewatch.export.tensorrt_build import build_bundle_plan

            samples = parity_samples(bundle, manifest, inspector.preprocessor, images)
            limit = tolerance or (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
            manifest, report = build_bundle_plan(bundle, inspector, manifest, samples, limit, max_batch, fp16)
            click.echo(_summary(bundle, manifest["export"]["tensorrt"], report))
    except ParityError as exc:
        click.echo(exc.report.table())
        raise
