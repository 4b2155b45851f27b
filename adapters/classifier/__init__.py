"""The classifier adapter: ONNX Runtime models behind a micro-batching scorer, served on NATS."""
