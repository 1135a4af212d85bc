"""Export: the feature extractor as ONNX (checked for parity with PyTorch) and as a TensorRT engine."""
