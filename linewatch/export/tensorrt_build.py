"""A serialized TensorRT engine (`network.plan`) built from the bundle's `network.onnx`, any number of outputs.

An engine is tied to the GPU model and TensorRT version it was built with, so both are recorded in the
manifest, and so is the hash of the ONNX file it came from (the runtime ignores a plan that is older).
FP32 builds turn TF32 off, because TF32 convolutions alone can break the 1e-3 score-parity contract.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from linewatch.bundle import BundleError, sha256
from linewatch.engines import PLAN_FILE, EngineUnavailable, NetworkIO, exported_file
from linewatch.engines.tensorrt_engine import TensorRTEngine, import_tensorrt
from linewatch.export.onnx_export import record_export
from linewatch.export.parity import ParityError, ParityReport, ParitySamples, check_parity
from linewatch.inspector import Inspector

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16


def build_plan(
    onnx_path: Path, plan_path: Path, io: NetworkIO, max_batch: int = DEFAULT_MAX_BATCH, fp16: bool = False
) -> dict[str, Any]:
    """Parse the ONNX file, build an engine for batches 1..max_batch, write it; return its manifest entry."""
    trt = import_tensorrt()
    import torch

    if max_batch < 1:
        raise ValueError(f"--max-batch must be at least 1, got {max_batch}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise EngineUnavailable(
                f"--fp16 needs TensorRT 10: TensorRT {trt.__version__} removed the FP16 builder flag in "
                f"favour of strongly typed FP16 ONNX graphs; build without --fp16"
            )
        config.set_flag(trt.BuilderFlag.FP16)
    elif hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if sorted(outputs) != sorted(io.outputs):
        raise BundleError(f"{onnx_path} has outputs {outputs}, the bundle's network {list(io.outputs)}")
    shape = tuple(network.get_input(0).shape)  # (-1, C, H, W)
    profile = builder.create_optimization_profile()
    profile.set_shape(io.input_name, (1, *shape[1:]), (max_batch, *shape[1:]), (max_batch, *shape[1:]))
    config.add_optimization_profile(profile)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    Path(plan_path).write_bytes(bytes(serialized))
    major, minor = torch.cuda.get_device_capability()
    return {
        "file": PLAN_FILE,
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "precision": "fp16" if fp16 else "fp32 (tf32 off)",
        "batch": {"min": 1, "opt": max_batch, "max": max_batch},
        "input_shape": [-1, *shape[1:]],
        "outputs": outputs,
        "onnx_sha256": sha256(Path(onnx_path)),
        "build_seconds": round(time.perf_counter() - started, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def build_bundle_plan(
    bundle: Path, inspector: Inspector, manifest: dict[str, Any], samples: ParitySamples, tolerance: float,
    max_batch: int = DEFAULT_MAX_BATCH, fp16: bool = False,
) -> tuple[dict[str, Any], ParityReport]:
    """Build from the recorded ONNX file, check parity on the GPU, then install and record the plan."""
    bundle = Path(bundle)
    onnx_file = exported_file(manifest, "onnx")
    if onnx_file not in manifest["files"]:
        raise BundleError(f"{bundle} has no recorded {onnx_file}: run export-model {bundle} --format onnx")
    with tempfile.TemporaryDirectory(dir=bundle, prefix=".export-") as tmp:
        staging = Path(tmp) / PLAN_FILE
        section = build_plan(bundle / onnx_file, staging, inspector.io, max_batch, fp16)
        report = check_parity(inspector, TensorRTEngine(staging, inspector.io), samples, tolerance)
        if not report.passed:
            raise ParityError(report, PLAN_FILE)
        staging.replace(bundle / PLAN_FILE)
    manifest = record_export(bundle, manifest, "tensorrt", {**section, "parity": report.to_dict()}, PLAN_FILE)
    log.info("wrote %s (TensorRT %s on %s)", bundle / PLAN_FILE, section["tensorrt"], section["gpu"])
    return manifest, report
