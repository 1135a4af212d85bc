"""The detector's network (feature extractor, autoencoder, ...) as one ONNX graph with a dynamic batch.

Uses the torch.export-based exporter (`dynamo=True`): it handles timm's TF-style 'same' padding and
torchvision ResNets, writes static channel/spatial sizes, and is the exporter torch maintains. Input and
output names come from the bundle's network section; scoring stays outside the graph, so every engine
shares `linewatch.scoring`. A new file replaces the bundle's `network.onnx` only after it passes the
parity check, so a bundle never holds an unchecked export.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
import torch

from linewatch.bundle import write_manifest
from linewatch.engines import ONNX_FILE, NetworkIO
from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine
from linewatch.export.parity import FP32_TOLERANCE, ParityError, ParityReport, ParitySamples, check_parity
from linewatch.inspector import Inspector

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
MIN_OPSET = 18  # the torch.export-based exporter implements opset 18 and newer
MAX_OPSET = onnx.defs.onnx_opset_version()


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def export_onnx(network: torch.nn.Module, io: NetworkIO, path: Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write `network` to `path`, validate it with the ONNX checker and return its manifest section."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset} is not supported: choose {MIN_OPSET}..{MAX_OPSET}")
    example = torch.zeros(2, io.channels, *io.size)  # batch 2: torch.export specialises a batch of 1 away
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        network.cpu().eval(), (example,), str(path), dynamo=True, opset_version=opset, external_data=False,
        input_names=[io.input_name], output_names=list(io.outputs), dynamic_shapes=({0: batch},),
        verbose=False,
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    inputs, outputs = list(model.graph.input), list(model.graph.output)
    names = [v.name for v in inputs], [v.name for v in outputs]
    if names != ([io.input_name], list(io.outputs)):
        raise ValueError(f"exported graph has inputs {names[0]} and outputs {names[1]}")
    in_shape = _shape(inputs[0])
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    return {
        "file": ONNX_FILE,
        "opset": opsets.get("ai.onnx", opset),
        "input": {"name": io.input_name, "shape": in_shape, "dtype": "float32", "layout": "NCHW 0..255"},
        "outputs": {v.name: {"shape": _shape(v), "dtype": "float32"} for v in outputs},
        "dynamic_batch": isinstance(in_shape[0], str) and all(isinstance(_shape(v)[0], str) for v in outputs),
        "exporter": f"torch.onnx dynamo (torch {torch.__version__}, onnx {onnx.__version__})",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def record_export(
    bundle: Path, manifest: dict[str, Any], key: str, section: dict[str, Any], filename: str
) -> dict[str, Any]:
    """Add `filename` and `export.<key>` to the manifest, keeping every other section and file hash.

    A file of an earlier export under another name (a v1 bundle's `backbone.onnx`) leaves the bundle.
    """
    previous = manifest.get("export", {}).get(key, {}).get("file")
    files = [name for name in manifest["files"] if name != previous or name == filename]
    if previous and previous != filename:
        (Path(bundle) / previous).unlink(missing_ok=True)
    updated = {**manifest, "export": {**manifest.get("export", {}), key: section}}
    return write_manifest(bundle, updated, [*files, filename])


def export_bundle_onnx(
    bundle: Path, inspector: Inspector, samples: ParitySamples, opset: int = DEFAULT_OPSET,
    tolerance: float = FP32_TOLERANCE, threads: int | None = None,
) -> tuple[dict[str, Any], ParityReport]:
    """Export, check parity against PyTorch, then install `network.onnx` and update the manifest.

    Raises `ParityError` (leaving the bundle untouched) when image scores differ beyond `tolerance`.
    """
    bundle = Path(bundle)
    with tempfile.TemporaryDirectory(dir=bundle, prefix=".export-") as tmp:
        staging = Path(tmp) / ONNX_FILE
        section = export_onnx(inspector.network, inspector.io, staging, opset)
        candidate = OnnxRuntimeEngine(staging, inspector.io, device="cpu", threads=threads)
        report = check_parity(inspector, candidate, samples, tolerance)
        if not report.passed:
            raise ParityError(report, ONNX_FILE)
        staging.replace(bundle / ONNX_FILE)
    section = {**section, "parity": report.to_dict()}
    manifest = record_export(bundle, inspector.manifest, "onnx", section, ONNX_FILE)
    log.info("wrote %s (opset %s)", bundle / ONNX_FILE, section["opset"])
    return manifest, report

