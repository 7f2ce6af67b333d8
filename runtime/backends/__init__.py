"""Inference backends: the base class, the one registry table, onnxruntime and TensorRT."""
