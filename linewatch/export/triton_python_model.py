"""Triton Python-backend model that runs the bundle's ONNX network with onnxruntime (copied as `1/model.py`).

For Triton builds without the onnxruntime backend (`nvidia-pytriton` ships only the Python backend):
the same `model.onnx`, the same tensor names, one onnxruntime run per dynamic batch (the requests Triton
merged are concatenated, run together and split again). Runs inside Triton's Python stub, never imported
by linewatch; it needs numpy and onnxruntime importable there (e.g. PYTHONPATH set for the server).
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_default_unraisable = sys.unraisablehook


def _ignore_consumed_capsule(unraisable: "sys.UnraisableHookArgs") -> None:
    """numpy 2's DLPack capsule deleter complains about a capsule the stub already consumed; nothing is lost."""
    if not (isinstance(unraisable.exc_value, ValueError) and "PyCapsule" in str(unraisable.exc_value)):
        _default_unraisable(unraisable)


class TritonPythonModel:
    """Triton's Python-backend interface: initialize, execute(requests) -> responses, finalize."""

    def initialize(self, args: dict) -> None:
        sys.unraisablehook = _ignore_consumed_capsule
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        threads = config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value")
        if threads:
            options.intra_op_num_threads = int(threads)
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list) -> list:
        # Tensors cross the stub through DLPack: with numpy 2, Triton 2.51's stub reads as_numpy() inputs wrongly
        # and sends pb_utils.Tensor(name, array) outputs empty (it was built against numpy 1's array layout).
        inputs = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name)) for r in requests]
        outputs = self.session.run(self.output_names, {self.input_name: np.concatenate(inputs)})
        responses, start = [], 0
        for batch in inputs:
            stop = start + len(batch)
            tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(out[start:stop]))
                       for name, out in zip(self.output_names, outputs, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses

    def finalize(self) -> None:
        self.session = None
