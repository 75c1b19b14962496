"""Export side of began: a training run -> a bundle of ONNX graphs (needs torch and onnx).

Reads the run through began.train.runs and writes the bundle by the contract in
began/bundle (graph names, manifest fields, format version)."""
