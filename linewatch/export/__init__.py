"""Export: the detector's network as ONNX (checked for parity with PyTorch) and as a TensorRT engine."""
