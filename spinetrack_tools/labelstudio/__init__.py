"""Label Studio: the labeling config from the skeleton, lossless COCO <-> Label Studio conversion, the SDK
adapter (push / pull) and a local server."""
