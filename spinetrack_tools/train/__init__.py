"""Reference trainer (``train`` extra, plain PyTorch): a compact RTMPose-style SimCC model exported to ONNX
with the SpinePose I/O contract, so ``spinetrack predict`` runs it."""
