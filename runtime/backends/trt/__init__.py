"""The native TensorRT backend: engine sidecar checks, buffer planning, CUDA calls."""
