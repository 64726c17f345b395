"""PyTorch to ONNX export of the deployable networks, and the TensorRT-compatible graph variant."""
