"""fcnx.export: Keras -> ONNX (FP32/FP16/INT8) -> TensorRT, with parity against Keras."""
