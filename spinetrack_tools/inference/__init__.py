"""Top-down pose models in ONNX: crops, SimCC and heatmap decoding, batching, detectors."""
