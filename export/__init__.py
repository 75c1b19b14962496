"""Export side of began: a training run -> a bundle of ONNX graphs (needs torch and onnx)."""
